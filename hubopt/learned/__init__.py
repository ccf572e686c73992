"""Learned optimizers: VeLO and hubopt's own small learned optimizer.

    velo_lopt/    VeLO: the transform, its math, checkpoints and download
    small_lopt/   hubopt's own ("small"): the architecture and the bundled θ
    meta/         meta-training of hubopt's own
    checkpoint    the msgpack checkpoint format both use

Names are imported lazily so that `import hubopt` stays light.
"""

from importlib import import_module

_EXPORTS = {
    # VeLO (issue 3)
    "velo": "hubopt.learned.velo_lopt.transform",
    "VeloState": "hubopt.learned.velo_lopt.transform",
    "init_velo_theta": "hubopt.learned.velo_lopt.transform",
    "load_velo_theta": "hubopt.learned.velo_lopt.checkpoint",
    "save_velo_theta": "hubopt.learned.velo_lopt.checkpoint",
    "read_checkpoint": "hubopt.learned.checkpoint",
    "write_checkpoint": "hubopt.learned.checkpoint",
    "fetch_velo": "hubopt.learned.velo_lopt.fetch",
    "velo_cache_path": "hubopt.learned.velo_lopt.fetch",
    # hubopt's own learned optimizer (issue 4)
    "MLPLOpt": "hubopt.learned.small_lopt.architecture",
    "small": "hubopt.learned.small_lopt.bundled",
    "from_theta_file": "hubopt.learned.small_lopt.bundled",
    "load_theta_file": "hubopt.learned.small_lopt.bundled",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    if name == "pretrained":  # the bundled optimizer's old loader: one name now
        raise AttributeError(
            "hubopt.learned.pretrained is now hubopt.learned.small: the bundled learned "
            "optimizer has one name, 'small' (pretrained('small', num_steps=N) -> "
            "small(num_steps=N))"
        )
    raise AttributeError(f"module 'hubopt.learned' has no attribute {name!r}")
