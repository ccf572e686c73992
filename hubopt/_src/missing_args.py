"""One voice for a missing `update` argument: the transform names itself and what it needs.

    hub needs the params: update(grads, state, params, ...)
    velo needs the loss as value=: update(grads, state, params, value=loss)
    lgl2o needs a loss closure as value_fn=: update(grads, state, params, value_fn=loss_fn)

Always a `TypeError` (a missing argument, as Python's own). A member's error inside HUB,
LGL2O or a blend is prefixed with the outer transform and the member's role:
"hub: its learned optimizer: velo needs the loss as value=: ...".
"""

from __future__ import annotations

__all__ = ["ARGUMENTS", "missing_argument", "member_error"]

ARGUMENTS = {
    "params": "the params: update(grads, state, params, ...)",
    "value": "the loss as value=: update(grads, state, params, value=loss)",
    "value_fn": "a loss closure as value_fn=: update(grads, state, params, value_fn=loss_fn)",
}


def missing_argument(who: str, argument: str) -> TypeError:
    """The `TypeError` for `who`'s update called without `argument` (a key of ARGUMENTS)."""
    return TypeError(f"{who} needs {ARGUMENTS[argument]}")


def member_error(owner: str, role: str, error: TypeError) -> TypeError:
    """`error` from the `role` member of `owner`, said by the owner."""
    return TypeError(f"{owner}: its {role} optimizer: {error}")
