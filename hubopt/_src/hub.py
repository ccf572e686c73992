r"""HUB: the Hybrid-Update-Based optimizer.

One gradient g per step feeds both members. For every parameter tensor (a
"layer") with n entries,

    σ = softmax(|g|)            σ_i = exp(|g_i| − max|g|) / Σ_j exp(|g_j| − max|g|)

computed over all n entries of that tensor (a one-entry tensor gets σ = 1),
optionally clamped, σ ← clip(σ, B, A)  (clipping HUB, paper eqs. 16–17), and

    default  (eq. 5):   U = σ ⊙ U_hand + (1 − σ) ⊙ U_learned
    inverted (eq. 13):  U = (1 − σ) ⊙ U_hand + σ ⊙ U_learned

Block-wise HUB (App. C.2) gives each tensor its own mode through `blocks`.

On the paper's contradiction: App. C.2 assigns the equations to the pretrained
backbone and the new head in opposite ways in its text and its algorithm
box. hubopt takes no side in the transform: `blocks` labels each tensor
"default" or "inverted" and both assignments are one dict away. The fine-tuning
recipe in the README uses the reading of §5 (the pretrained backbone is
"inverted": it should mostly follow the hand-designed optimizer where the
gradient is small and dense, and the new head is "default").

Diagnostics: `sigma_histogram(g, clip=...)` bins the σ of every tensor (the
harness records it at a few steps of every HUB run); for the last step and each
tensor, the state keeps min/mean/max
of σ (after clamping) and the hand share of the update,

    share = ‖w ⊙ U_hand‖₁ / (‖w ⊙ U_hand‖₁ + ‖(1 − w) ⊙ U_learned‖₁),

with w the hand weight (σ in default mode, 1 − σ in inverted mode). When both
members propose exactly zero, share is the mean hand weight (the limit for
equal updates).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from hubopt._src import members
from hubopt._src.state_search import find_one
from hubopt._src.tree_paths import leaf_paths

MODES = ("default", "inverted")


class HubLeafStats(NamedTuple):
    """Per-tensor diagnostics of the last step; each field has the params' tree."""

    sigma_min: Any
    sigma_mean: Any
    sigma_max: Any
    hand_share: Any


class HubState(NamedTuple):
    """State of `hub`: the step count, both members' states and diagnostics."""

    count: jax.Array
    members: members.MemberStates
    stats: HubLeafStats


def layer_softmax(g: jax.Array) -> jax.Array:
    """σ = softmax(|g|) over all entries of one tensor, in float32, same shape as g.

    Stable for any finite |g| (the max is subtracted before exp); a one-entry
    tensor gets σ = 1 and an empty one an empty σ.
    """
    a = jnp.abs(jnp.asarray(g).astype(jnp.float32))
    if a.size == 0:
        return a
    e = jnp.exp(a - jnp.max(a))
    return e / jnp.sum(e)


def _validate_clip(clip) -> tuple[float, float] | None:
    if clip is None:
        return None
    try:
        lo, hi = (float(c) for c in clip)
    except (TypeError, ValueError) as e:
        raise TypeError(f"clip must be a pair (B, A) of numbers or None, got {clip!r}") from e
    if not 0.0 <= lo <= 1.0:
        raise ValueError(f"clip lower bound B must lie in [0, 1], got B={lo}")
    if not 0.0 <= hi <= 1.0:
        raise ValueError(f"clip upper bound A must lie in [0, 1], got A={hi}")
    if lo > hi:
        raise ValueError(f"clip needs B <= A, got B={lo} > A={hi}")
    return lo, hi


def _validate_mode(mode, where: str) -> str:
    if mode not in MODES:
        raise ValueError(f"{where} must be one of {MODES}, got {mode!r}")
    return mode


def _resolve_modes(mode: str, blocks, tree) -> list[str]:
    """One mode per leaf of `tree`, from `blocks` (labels or callable) or `mode`."""
    n_leaves = len(jax.tree_util.tree_leaves(tree))
    if blocks is None:
        return [mode] * n_leaves
    labels = blocks(tree) if callable(blocks) else blocks
    tree_def = jax.tree_util.tree_structure(tree)
    try:
        label_leaves = tree_def.flatten_up_to(labels)
    except (ValueError, TypeError) as e:
        raise ValueError(
            "blocks must have the same tree structure as the params "
            f"(one mode label per tensor): {e}"
        ) from e
    return [_validate_mode(lab, "every label in blocks") for lab in label_leaves]


def _mix_leaf(g, u_hand, u_learned, mode: str, clip):
    """Mixed update of one tensor and its four diagnostics.

    The σ statistics come in closed form from the softmax's own reductions
    (max σ = 1/Z, min σ = exp(min|g| − max|g|)/Z, mean σ = 1/n), so that σ is
    never reduced again; only a clamped σ needs its mean summed.
    """
    out_dtype = jnp.asarray(g).dtype
    a = jnp.abs(jnp.asarray(g).astype(jnp.float32))
    if a.size == 0:
        nan = jnp.float32(jnp.nan)
        return jnp.zeros(a.shape, out_dtype), (nan, nan, nan, nan)
    a_max = jnp.max(a)
    z = jnp.sum(jnp.exp(a - a_max))
    sigma = jnp.exp(a - a_max) / z
    sigma_min, sigma_max = jnp.exp(jnp.min(a) - a_max) / z, 1.0 / z
    if clip is None:
        sigma_mean = jnp.float32(1.0 / a.size)
    else:
        sigma = jnp.clip(sigma, clip[0], clip[1])
        sigma_min, sigma_max = (jnp.clip(s, clip[0], clip[1]) for s in (sigma_min, sigma_max))
        sigma_mean = jnp.mean(sigma)
    w_hand = sigma if mode == "default" else 1.0 - sigma
    hand_part = w_hand * jnp.asarray(u_hand).astype(jnp.float32)
    learned_part = (1.0 - w_hand) * jnp.asarray(u_learned).astype(jnp.float32)
    update = (hand_part + learned_part).astype(out_dtype)
    hand_l1 = jnp.sum(jnp.abs(hand_part))
    total_l1 = hand_l1 + jnp.sum(jnp.abs(learned_part))
    mean_w_hand = sigma_mean if mode == "default" else 1.0 - sigma_mean
    share = jnp.where(total_l1 > 0, hand_l1 / jnp.where(total_l1 > 0, total_l1, 1.0), mean_w_hand)
    return update, (sigma_min, sigma_mean, sigma_max, share)


# σ histogram bins: [0, 1e-9), then half-decades [10^k, 10^(k+1/2)) up to 1 (the last bin
# holds σ = 1, a one-entry tensor's): where a tensor of n entries sits (σ ≈ 1/n) and how
# much of it a clamp [B, A] moves
SIGMA_HIST_EDGES = (0.0, *(10.0 ** (k / 2) for k in range(-18, 1)))


def sigma_histogram(grads, *, clip=None, edges=SIGMA_HIST_EDGES):
    """For every tensor of `grads`, how many of its entries have σ (the weight HUB gives
    them at this gradient, clamped into `clip` = (B, A) if given) in each bin of `edges`:
    int32 counts of length `len(edges) − 1`, bin i holding edges[i] <= σ < edges[i+1]
    and the last bin closed on the right (so counts sum to the tensor's size)."""
    clip = _validate_clip(clip)
    edges_arr = jnp.asarray(edges, jnp.float32)
    bins = edges_arr.shape[0] - 1

    def one(g):
        sigma = layer_softmax(g).ravel()
        if clip is not None:
            sigma = jnp.clip(sigma, clip[0], clip[1])
        idx = jnp.clip(jnp.searchsorted(edges_arr, sigma, side="right") - 1, 0, bins - 1)
        return jnp.bincount(idx, length=bins).astype(jnp.int32)

    return jax.tree_util.tree_map(one, grads)


def _empty_stats(params) -> HubLeafStats:
    nan = lambda _: jnp.full((), jnp.nan, jnp.float32)  # noqa: E731
    return HubLeafStats(*(jax.tree_util.tree_map(nan, params) for _ in range(4)))


def hub(
    hand: optax.GradientTransformation,
    learned: optax.GradientTransformation,
    *,
    mode: str = "default",
    clip: tuple[float, float] | None = None,
    blocks: Any | Callable[[Any], Any] | None = None,
) -> optax.GradientTransformationExtraArgs:
    """HUB of a hand-designed and a learned optimizer (see the module docstring).

    Args:
      hand: the hand-designed optimizer (any optax transform).
      learned: the learned optimizer (any optax transform; it may require
        `params` and extra args such as `value=`).
      mode: "default" (eq. 5) or "inverted" (eq. 13) for every tensor.
      clip: `(B, A)` with 0 <= B <= A <= 1: σ is clamped into [B, A].
      blocks: a pytree of mode labels with the params' structure, or a
        callable `params -> labels`; overrides `mode` tensor by tensor.

    Both members see the same gradients and the whole tree and advance every
    step. Extra args given to `update` reach each member that accepts them.
    """
    members.check_member("hand", hand)
    members.check_member("learned", learned)
    _validate_mode(mode, "mode")
    clip = _validate_clip(clip)
    if blocks is not None and not callable(blocks):
        # Labels given as a tree are checked now, not at the first step.
        for label in jax.tree_util.tree_leaves(blocks):
            _validate_mode(label, "every label in blocks")

    def init_fn(params):
        _resolve_modes(mode, blocks, params)  # fail early on mismatched labels
        return HubState(
            count=jnp.zeros((), jnp.int32),
            members=members.init_members(hand, learned, params),
            stats=_empty_stats(params),
        )

    def update_fn(updates, state: HubState, params=None, **extra_args):
        modes = _resolve_modes(mode, blocks, updates)
        u_hand, u_learned, new_members = members.update_members(
            hand, learned, updates, state.members, params, extra_args
        )
        tree_def = jax.tree_util.tree_structure(updates)
        g_leaves = tree_def.flatten_up_to(updates)
        h_leaves = tree_def.flatten_up_to(u_hand)
        l_leaves = tree_def.flatten_up_to(u_learned)
        mixed, stats = [], []
        for g, uh, ul, m in zip(g_leaves, h_leaves, l_leaves, modes, strict=True):
            u, s = _mix_leaf(g, uh, ul, m, clip)
            mixed.append(u)
            stats.append(s)
        stat_trees = [
            jax.tree_util.tree_unflatten(tree_def, list(col)) for col in zip(*stats, strict=True)
        ]
        if not stat_trees:  # an empty params tree
            stat_trees = [tree_def.unflatten([])] * 4
        new_state = HubState(
            count=optax.safe_increment(state.count),
            members=new_members,
            stats=HubLeafStats(*stat_trees),
        )
        return jax.tree_util.tree_unflatten(tree_def, mixed), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def hub_stats(state) -> dict[str, dict[str, float]]:
    """Diagnostics of the last HUB step by tensor path.

    `state` is a `HubState` or any optimizer state that contains exactly one
    (e.g. `optax.chain(clip, hub(...))`'s). Returns
    `{path: {"sigma_min", "sigma_mean", "sigma_max", "hand_share"}}` as floats;
    NaN before the first update.
    """
    stats = jax.device_get(find_one(state, HubState, "hub_stats").stats)
    paths = leaf_paths(stats.sigma_min)
    columns = [jax.tree_util.tree_leaves(field) for field in stats]
    return {
        path: {name: float(col[i]) for name, col in zip(HubLeafStats._fields, columns, strict=True)}
        for i, path in enumerate(paths)
    }
