"""Running two optax members side by side on one shared gradient.

HUB, LGL2O and the fixed blend all hold a hand-designed and a learned member,
feed both the same gradients and the full parameter tree, and advance both
states every step. This module is that shared plumbing: how extra arguments
(`value=`, `value_fn=`, ...) reach each member, and the state pair.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, NamedTuple

import optax

from hubopt._src.missing_args import member_error


class MemberStates(NamedTuple):
    """The states of the hand-designed and the learned member."""

    hand: Any
    learned: Any


def _keyword_spec(update_fn) -> tuple[bool, frozenset[str], frozenset[str]]:
    """(takes **kwargs, keyword names it accepts, keyword-only names it requires)."""
    try:
        sig = inspect.signature(update_fn)
    except (TypeError, ValueError):  # builtins / C callables: assume permissive
        return True, frozenset(), frozenset()
    params = list(sig.parameters.values())
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params)
    # The first three positional slots are (updates, state, params).
    named = frozenset(
        p.name for p in params[3:] if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    )
    required = frozenset(
        p.name for p in params if p.kind is p.KEYWORD_ONLY and p.default is p.empty
    )
    return var_kw, named, required


def call_member(
    role: str,
    tx: optax.GradientTransformation,
    updates,
    state,
    params,
    extra_args: Mapping[str, Any],
    owner: str | None = None,
):
    """Calls `tx.update`, passing on only the extra args that it accepts.

    A plain `GradientTransformation` gets none; a `GradientTransformationExtraArgs`
    gets every extra arg if its update takes `**kwargs`, else the ones it names.
    A keyword-only argument that the member requires but the caller did not
    give raises a `TypeError` that names the member and the argument.
    """
    if not isinstance(tx, optax.GradientTransformationExtraArgs):
        return tx.update(updates, state, params)
    var_kw, named, required = _keyword_spec(tx.update)
    missing = sorted(required - set(extra_args))
    if missing:
        error = TypeError(
            f"the {role} optimizer needs the extra argument(s) {missing} in update(); "
            f"got {sorted(extra_args) or 'none'}. Pass e.g. update(grads, state, params, "
            f"{missing[0]}=...)."
        )
        raise error if owner is None else TypeError(f"{owner}: {error}")
    passed = dict(extra_args) if var_kw else {k: v for k, v in extra_args.items() if k in named}
    try:
        return tx.update(updates, state, params, **passed)
    except TypeError as e:  # a member's missing argument, said by its owner
        if owner is None:
            raise
        raise member_error(owner, role, e) from e


def check_member(role: str, tx) -> None:
    """Raises a `TypeError` naming `role` unless `tx` is an optax transformation."""
    if not (callable(getattr(tx, "init", None)) and callable(getattr(tx, "update", None))):
        raise TypeError(
            f"{role} must be an optax GradientTransformation (with init and update), "
            f"got {type(tx).__name__}"
        )


def init_members(hand, learned, params) -> MemberStates:
    return MemberStates(hand=hand.init(params), learned=learned.init(params))


def update_members(owner: str, hand, learned, updates, states: MemberStates, params, extra_args):
    """Both members' updates from the same gradient, and both advanced states; `owner`
    (hub, lgl2o, blend) names itself in a member's error."""
    u_hand, s_hand = call_member("hand", hand, updates, states.hand, params, extra_args, owner)
    u_learned, s_learned = call_member(
        "learned", learned, updates, states.learned, params, extra_args, owner
    )
    return u_hand, u_learned, MemberStates(hand=s_hand, learned=s_learned)
