r"""LGL2O: the loss-guarded learned optimizer (Prémont-Schwarz et al., 2022).

Each step both members propose an update from the one shared gradient g,

    U_h = hand(g),  U_l = learned(g),

the caller's loss closure is evaluated at both candidates,

    L_h = value_fn(θ + U_h),  L_l = value_fn(θ + U_l),

and the whole model takes U_l if L_l < L_h, else U_h (ties and a non-finite
L_l go to the hand-designed optimizer). Both states advance every step. Cost:
two forward passes, no extra backward pass. Which batch `value_fn` closes
over (the current one, or the next) is the caller's choice.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from hubopt._src import members
from hubopt._src.input_checks import check_gradients
from hubopt._src.missing_args import missing_argument
from hubopt._src.state_search import find_one


class LGL2OState(NamedTuple):
    """State of `lgl2o`: step count, learned wins so far, the last choice, members."""

    count: jax.Array
    learned_wins: jax.Array
    last_learned_won: jax.Array
    members: members.MemberStates


def lgl2o(
    hand: optax.GradientTransformation, learned: optax.GradientTransformation
) -> optax.GradientTransformationExtraArgs:
    """The loss-guarded switch between `hand` and `learned` (see module docstring).

    `update(grads, state, params, *, value_fn, **extra)`: `value_fn(params)`
    returns the scalar loss that decides between the two candidates.
    """
    members.check_member("hand", hand)
    members.check_member("learned", learned)

    def init_fn(params):
        return LGL2OState(
            count=jnp.zeros((), jnp.int32),
            learned_wins=jnp.zeros((), jnp.int32),
            last_learned_won=jnp.zeros((), jnp.bool_),
            members=members.init_members(hand, learned, params),
        )

    def update_fn(updates, state: LGL2OState, params=None, *, value_fn=None, **extra_args):
        if params is None:  # the candidates are params + update
            raise missing_argument("lgl2o", "params")
        if value_fn is None or not callable(value_fn):
            raise missing_argument("lgl2o", "value_fn")
        check_gradients("lgl2o", updates, params)
        extra_args = dict(extra_args, value_fn=value_fn)
        u_hand, u_learned, new_members = members.update_members(
            "lgl2o", hand, learned, updates, state.members, params, extra_args
        )
        loss_hand = jnp.asarray(value_fn(optax.apply_updates(params, u_hand)), jnp.float32)
        loss_learned = jnp.asarray(value_fn(optax.apply_updates(params, u_learned)), jnp.float32)
        if loss_hand.shape != () or loss_learned.shape != ():
            raise ValueError(f"value_fn must return a scalar loss, got shape {loss_hand.shape}")
        learned_won = jnp.isfinite(loss_learned) & (
            (loss_learned < loss_hand) | ~jnp.isfinite(loss_hand)
        )
        chosen = jax.tree_util.tree_map(
            lambda h, l: jnp.where(learned_won, l, h).astype(h.dtype), u_hand, u_learned
        )
        new_state = LGL2OState(
            count=optax.safe_increment(state.count),
            learned_wins=state.learned_wins + learned_won.astype(jnp.int32),
            last_learned_won=learned_won,
            members=new_members,
        )
        return chosen, new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def lgl2o_stats(state) -> dict[str, float]:
    """`{"steps", "learned_win_fraction", "last_learned_won"}` of the one LGL2O state in `state`."""
    s = jax.device_get(find_one(state, LGL2OState, "lgl2o_stats"))
    steps = int(s.count)
    return {
        "steps": steps,
        "learned_win_fraction": float(s.learned_wins) / steps if steps else float("nan"),
        "last_learned_won": bool(s.last_learned_won),
    }
