"""Readable '/'-joined names for the leaves of a pytree ("dense/w", "layers/0/b")."""

from __future__ import annotations

import jax


def _key_name(key) -> str:
    for attr in ("key", "idx", "name"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def leaf_paths(tree) -> list[str]:
    """The '/'-joined path of every leaf, in `jax.tree_util.tree_leaves` order."""
    with_paths, _ = jax.tree_util.tree_flatten_with_path(tree)
    return ["/".join(_key_name(k) for k in path) or "<root>" for path, _ in with_paths]
