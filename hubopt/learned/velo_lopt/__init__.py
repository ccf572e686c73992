"""VeLO (Metz et al. 2022), Google's learned optimizer, reproduced as an optax transform.

    transform    `velo(num_steps, theta=...)`, its state and update
    _math        the math of one update (learned_optimization's ``HyperV2``)
    checkpoint   its meta-parameters θ on disk: load, validate, save
    fetch        the official checkpoint's download into the cache
    cli          ``hubopt velo download``

The public names are `hubopt.learned.velo`, `init_velo_theta`, `load_velo_theta`, ….
"""
