"""hubopt's own learned optimizer, "small": its architecture and the bundled θ.

    architecture   `MLPLOpt`, the per-parameter MLP around an Adam anchor (any θ)
    _features      the per-entry statistics it reads (momenta, factored moments)
    bundled        the meta-trained θ shipped in `weights/` (`small(num_steps=...)`)
                   and θ files of one's own (`from_theta_file`)

The public names are `hubopt.learned.small`, `MLPLOpt`, `from_theta_file`, ….
Meta-training is `hubopt.learned.meta`.
"""
