"""Checkpoints of a whole training state, with orbax: save, restore, resume.

    hubopt.checkpoint.save("runs/x/ckpt", step, state)   # any pytree: params, opt_state,
                                                         # step, PRNG key, loss history ...
    state = hubopt.checkpoint.restore("runs/x/ckpt", like=state)   # the latest step
    hubopt.checkpoint.latest_step("runs/x/ckpt")                    # None when there is none

Each step is a folder written by orbax's `CheckpointManager`, under a temporary name
that is renamed only once the step is complete: a crash while saving leaves the
earlier steps as they were, and a half-written step is never restored. The last
`keep` steps are kept. Restoring needs `like`, a tree with the state's structure
(arrays or `jax.ShapeDtypeStruct`s, e.g. a freshly initialised state): the restored
state has its structure, NamedTuples included, and equals the saved one bit for bit,
so training k steps, saving, restoring in a new process and training N − k more
equals training N steps (`tests/test_checkpoint_resume.py`). A checkpoint that cannot
be read or does not fit `like` is a `CheckpointError` naming the folder and step.

Two kinds of leaves orbax does not store are handled here: a typed PRNG key
(`jax.random.key`) is saved as its key data and rebuilt with `like`'s
implementation, and a zero-size array (the bundled optimizer keeps some) is not
saved at all and comes back as an empty array of `like`'s shape and dtype.

Needs `orbax-checkpoint` (`pip install 'hubopt[checkpoint]'`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["CheckpointError", "latest_step", "restore", "save"]

_EMPTY = np.zeros((), np.int8)  # stands for a zero-size array in the saved tree


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or that does not fit the state asked for."""


def _orbax():
    try:
        import orbax.checkpoint as ocp
    except ModuleNotFoundError as e:
        from hubopt._src.extras import require_extra

        raise require_extra("hubopt.checkpoint", e, "checkpoint") from e
    return ocp


def _is_key(x) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _is_empty(x) -> bool:
    """A zero-size array (or abstract array)."""
    return int(np.prod(np.shape(x))) == 0


def _storable(leaf):
    if _is_key(leaf):
        return jax.random.key_data(leaf)
    if _is_empty(leaf):
        return _EMPTY
    return leaf


def _abstract_storable(leaf):
    if _is_key(leaf):
        data = jax.eval_shape(jax.random.key_data, leaf)
        return jax.ShapeDtypeStruct(data.shape, data.dtype)
    if _is_empty(leaf):
        return jax.ShapeDtypeStruct(_EMPTY.shape, _EMPTY.dtype)
    return jax.ShapeDtypeStruct(np.shape(leaf), leaf.dtype)


def _rebuilt(stored, like_leaf):
    if _is_key(like_leaf):
        return jax.random.wrap_key_data(stored, impl=jax.random.key_impl(like_leaf))
    if _is_empty(like_leaf):
        return jnp.zeros(np.shape(like_leaf), like_leaf.dtype)
    return stored


def _manager(directory, keep: int = 3):
    ocp = _orbax()
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
    return ocp, ocp.CheckpointManager(Path(directory).absolute(), options=options)


def save(directory: str | os.PathLike, step: int, state: Any, *, keep: int = 3) -> Path:
    """Writes `state` as step `step` of the checkpoints in `directory` (created if
    needed), waits until it is complete, and keeps the last `keep` steps; returns the
    step's folder. A step already saved is a `CheckpointError` (nothing is overwritten)."""
    if isinstance(step, bool) or not isinstance(step, int | np.integer) or step < 0:
        raise ValueError(f"step must be a non-negative int, got {step!r}")
    ocp, manager = _manager(directory, keep)
    with manager:
        if int(step) in manager.all_steps():
            raise CheckpointError(f"{directory}: step {step} is saved already")
        storable = jax.tree_util.tree_map(_storable, state)
        manager.save(int(step), args=ocp.args.StandardSave(storable))
        manager.wait_until_finished()
    return Path(directory) / str(int(step))


def latest_step(directory: str | os.PathLike) -> int | None:
    """The newest complete step in `directory`, or None."""
    if not Path(directory).is_dir():
        return None
    _, manager = _manager(directory)
    with manager:
        return manager.latest_step()


def restore(directory: str | os.PathLike, like: Any, step: int | None = None) -> Any:
    """The state saved as `step` (default: the newest) in `directory`, with `like`'s
    structure; `CheckpointError` when there is none or it cannot be read or fit."""
    ocp, manager = _manager(directory)
    with manager:
        step = manager.latest_step() if step is None else int(step)
        if step is None or step not in manager.all_steps():
            raise CheckpointError(
                f"{directory}: no checkpoint {'' if step is None else f'at step {step} '}"
                f"to restore (steps: {sorted(manager.all_steps()) or 'none'})"
            )
        abstract = jax.tree_util.tree_map(_abstract_storable, like)
        try:
            stored = manager.restore(step, args=ocp.args.StandardRestore(abstract))
        except Exception as e:  # orbax/tensorstore raise many kinds on a damaged step
            raise CheckpointError(
                f"{directory}: step {step} cannot be restored into the given state "
                f"({type(e).__name__}: {str(e)[:300]})"
            ) from e
    try:
        return jax.tree_util.tree_map(_rebuilt, stored, like)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{directory}: step {step} does not fit the given state: {e}") from e
