"""Finding one kind of optimizer state inside nested states (chain, inject_hyperparams, ...)."""

from __future__ import annotations


def find_states(state, cls) -> list:
    """Every instance of `cls` inside `state`, searched through tuples, lists and dicts."""
    if isinstance(state, cls):
        return [state]
    if isinstance(state, tuple | list):
        return [found for child in state for found in find_states(child, cls)]
    if isinstance(state, dict):
        return [found for child in state.values() for found in find_states(child, cls)]
    return []


def find_one(state, cls, caller: str):
    """The single instance of `cls` in `state`; a ValueError naming `caller` otherwise."""
    found = find_states(state, cls)
    if len(found) != 1:
        raise ValueError(
            f"{caller} needs a state that contains exactly one {cls.__name__}, found {len(found)}"
        )
    return found[0]
