"""Learned optimizers: VeLO and hubopt's own small learned optimizer.

Names are imported lazily so that `import hubopt` stays light.
"""

from importlib import import_module

_EXPORTS = {
    # VeLO (issue 3)
    "velo": "hubopt.learned.velo_transform",
    "VeloState": "hubopt.learned.velo_transform",
    "init_velo_theta": "hubopt.learned.velo_transform",
    "load_velo_theta": "hubopt.learned.velo_checkpoint",
    "save_velo_theta": "hubopt.learned.velo_checkpoint",
    "read_checkpoint": "hubopt.learned.checkpoint",
    "write_checkpoint": "hubopt.learned.checkpoint",
    "fetch_velo": "hubopt.learned.velo_fetch",
    "velo_cache_path": "hubopt.learned.velo_fetch",
    # hubopt's own learned optimizer (issue 4)
    "MLPLOpt": "hubopt.learned.lopt",
    "pretrained": "hubopt.learned.bundled",
    "from_theta_file": "hubopt.learned.bundled",
    "load_theta_file": "hubopt.learned.bundled",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'hubopt.learned' has no attribute {name!r}")
