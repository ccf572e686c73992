r"""A fixed blend of two optimizers: U = λ·U_hand + (1 − λ)·U_learned.

The ablation reviewers asked for: HUB with σ replaced by a constant λ for
every entry of every tensor. λ = 1 is the hand optimizer, λ = 0 the learned one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from hubopt._src import members
from hubopt._src.input_checks import check_gradients


def blend(
    hand: optax.GradientTransformation,
    learned: optax.GradientTransformation,
    lam: float,
) -> optax.GradientTransformationExtraArgs:
    """λ·U_hand + (1 − λ)·U_learned with a fixed λ in [0, 1]; both states advance."""
    members.check_member("hand", hand)
    members.check_member("learned", learned)
    try:
        lam = float(lam)
    except (TypeError, ValueError) as e:
        raise TypeError(f"lam must be a number in [0, 1], got {lam!r}") from e
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must lie in [0, 1], got lam={lam}")

    def init_fn(params):
        return members.init_members(hand, learned, params)

    def update_fn(updates, state, params=None, **extra_args):
        check_gradients("blend", updates, params)
        u_hand, u_learned, new_state = members.update_members(
            "blend", hand, learned, updates, state, params, extra_args
        )

        def mix(g, h, l):
            mixed = lam * jnp.asarray(h, jnp.float32) + (1.0 - lam) * jnp.asarray(l, jnp.float32)
            return mixed.astype(jnp.asarray(g).dtype)

        return jax.tree_util.tree_map(mix, updates, u_hand, u_learned), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
