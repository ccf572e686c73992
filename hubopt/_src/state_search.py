"""Finding one kind of optimizer state inside nested states (chain, inject_hyperparams, a
Flax train state, any pytree)."""

from __future__ import annotations

import jax


def find_states(state, cls) -> list:
    """Every instance of `cls` inside `state`, in pytree order: searched through any
    pytree (tuples, lists, dicts, NamedTuples, registered dataclasses such as a Flax
    `TrainState`); an instance is not searched further."""
    leaves = jax.tree_util.tree_leaves(state, is_leaf=lambda x: isinstance(x, cls))
    return [leaf for leaf in leaves if isinstance(leaf, cls)]


def find_one(state, cls, caller: str, which: int | None = None):
    """The instance of `cls` in `state`: the only one, or number `which` (0-based, in
    pytree order) when there are several; a ValueError naming `caller` otherwise."""
    found = find_states(state, cls)
    if which is not None:
        if isinstance(which, bool) or not isinstance(which, int) or not 0 <= which < len(found):
            raise ValueError(
                f"{caller}: which={which!r} is not one of the {len(found)} {cls.__name__}s "
                f"in the state (0 … {len(found) - 1})"
            )
        return found[which]
    if len(found) != 1:
        more = "; pass which=i to pick one" if len(found) > 1 else ""
        raise ValueError(
            f"{caller} needs a state that contains exactly one {cls.__name__}, found "
            f"{len(found)}{more}"
        )
    return found[0]
