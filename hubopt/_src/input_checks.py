"""Checks of an `update`'s gradients, done at trace time (free at run time): a bad tree
gets an error that names the transform and the leaf, not a shape error from inside XLA.

    check_gradients("hub", grads, params, reference)
      TypeError   a leaf that is not floating point (integers and booleans would be
                  truncated by the mixture), or not an array at all
      ValueError  an empty tree; a tree other than the one the state was made for
                  (`reference`: any tree with the params' structure); a leaf whose
                  shape differs from its parameter's
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from hubopt._src.tree_paths import leaf_paths

__all__ = ["check_gradients", "scalar_loss"]


def _structure_error(who: str, what: str, got, want) -> ValueError:
    return ValueError(
        f"{who}: the gradients' tree differs from {what}:\n  gradients: {got}\n  {what}: {want}"
    )


def check_gradients(who: str, grads, params=None, reference=None) -> None:
    """Raises if `grads` cannot be the gradients of `params` (see the module docstring)."""
    leaves = jax.tree_util.tree_leaves(grads)
    if not leaves:
        raise ValueError(f"{who}: the gradients' tree has no arrays (got {grads!r})")
    structure = jax.tree_util.tree_structure(grads)
    if reference is not None and jax.tree_util.tree_structure(reference) != structure:
        want = jax.tree_util.tree_structure(reference)
        raise _structure_error(who, "the params the state was made for", structure, want)
    if params is not None and jax.tree_util.tree_structure(params) != structure:
        raise _structure_error(who, "the params", structure, jax.tree_util.tree_structure(params))
    param_leaves = jax.tree_util.tree_leaves(params) if params is not None else [None] * len(leaves)
    for path, g, p in zip(leaf_paths(grads), leaves, param_leaves, strict=True):
        dtype = getattr(g, "dtype", None)
        if dtype is None:
            raise TypeError(f"{who}: gradient {path!r} is a {type(g).__name__}, not an array")
        if not jnp.issubdtype(dtype, jnp.inexact):
            raise TypeError(
                f"{who}: gradient {path!r} has dtype {dtype}; {who} mixes floating-point "
                "updates only (an integer or boolean update would be truncated)"
            )
        if p is not None and jnp.shape(p) != jnp.shape(g):
            raise ValueError(
                f"{who}: gradient {path!r} has shape {tuple(jnp.shape(g))} but its parameter "
                f"has shape {tuple(jnp.shape(p))}"
            )


def scalar_loss(who: str, value) -> jax.Array:
    """`value` as a float32 scalar; a `ValueError` naming `who` when it is not a scalar."""
    loss = jnp.asarray(value, jnp.float32)
    if loss.shape != ():
        raise ValueError(
            f"{who}: value= must be the scalar loss, got an array of shape {loss.shape}"
        )
    return loss
