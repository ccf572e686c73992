r"""HUB: the Hybrid-Update-Based optimizer.

One gradient g per step feeds both members. For every parameter tensor (a
"layer") with n entries,

    σ = softmax(|g|)            σ_i = exp(|g_i| − max|g|) / Σ_j exp(|g_j| − max|g|)

computed over all n entries of that tensor (a one-entry tensor gets σ = 1) — the
paper's rule, and the default of `sigma=`, which also takes the width- and
scale-free rules of `hubopt.SIGMA_RULES` (`hubopt._src.sigma_rules`) or a callable
g -> σ — optionally clamped, σ ← clip(σ, B, A)  (clipping HUB, paper eqs. 16–17), and

    default  (eq. 5):   U = σ ⊙ U_hand + (1 − σ) ⊙ U_learned
    inverted (eq. 13):  U = (1 − σ) ⊙ U_hand + σ ⊙ U_learned

Non-finite gradients: every rule sees a NaN or infinite entry as |g| = 0, so a bad
entry stays in its own entry (as with Adam alone) instead of turning its whole
tensor's σ into NaN; the members' updates pass through as they are.

Block-wise HUB (App. C.2) gives each tensor its own mode through `blocks`: a
label per tensor, or per sub-tree (a prefix of the params tree).

On the paper's contradiction: App. C.2 assigns the equations to the pretrained
backbone and the new head in opposite ways in its text and its algorithm
box. hubopt takes no side in the transform: `blocks` labels each tensor
"default" or "inverted" and both assignments are one dict away. The fine-tuning
recipe in the README uses the reading of §5 (the pretrained backbone is
"inverted": it should mostly follow the hand-designed optimizer where the
gradient is small and dense, and the new head is "default").

Diagnostics: `sigma_histogram(g, clip=...)` bins the σ of every tensor (the
harness records it at a few steps of every HUB run); for the last step and each
tensor, the state keeps (unless `stats=False`) min/mean/max
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
from hubopt._src.input_checks import check_gradients
from hubopt._src.sigma_rules import SigmaRule, l1_norm, resolve_rule
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
    """State of `hub`: the step count, both members' states, diagnostics and, for a
    σ rule with state (`hyper`), its state per tensor (else ())."""

    count: jax.Array
    members: members.MemberStates
    stats: HubLeafStats
    rule_state: Any = ()
    guard_fired: Any = ()  # with nan_guard: per tensor, the steps it fell back to hand


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
    """One mode per leaf of `tree`, from `blocks` (labels or callable) or `mode`.

    Labels are a tree with the params' structure or a prefix of it (one label for a
    whole sub-tree, e.g. {"backbone": "inverted", "head": "default"})."""
    n_leaves = len(jax.tree_util.tree_leaves(tree))
    if blocks is None:
        return [mode] * n_leaves
    labels = blocks(tree) if callable(blocks) else blocks
    try:
        full = jax.tree_util.tree_map(
            lambda label, sub: jax.tree_util.tree_map(lambda _: label, sub), labels, tree
        )
        label_leaves = jax.tree_util.tree_structure(tree).flatten_up_to(full)
    except (ValueError, TypeError) as e:
        raise ValueError(
            "blocks must have the params' tree structure or a prefix of it (one mode "
            f"label per tensor or per sub-tree): {e}"
        ) from e
    return [_validate_mode(lab, "every label in blocks") for lab in label_leaves]


def _mix_leaf(g, u_hand, u_learned, mode: str, clip, rule: SigmaRule, rule_state, stats: bool):
    """Mixed update of one tensor, its four diagnostics (NaN when `stats` is off) and
    the rule's new state."""
    out_dtype = jnp.asarray(g).dtype
    nan = jnp.float32(jnp.nan)
    if jnp.size(g) == 0:
        return jnp.zeros(jnp.shape(g), out_dtype), (nan, nan, nan, nan), rule_state
    u_sigma, u_other = (u_hand, u_learned) if mode == "default" else (u_learned, u_hand)
    if rule.uses_updates:
        sigma, rule_state = rule.weights(g, rule_state, u_sigma, u_other)
    else:
        sigma, rule_state = rule.weights(g, rule_state)
    sigma = jnp.asarray(sigma, jnp.float32)
    if sigma.shape not in ((), jnp.shape(g)):
        raise ValueError(
            f"hub: sigma rule {rule.name!r} gave weights of shape {sigma.shape} for a "
            f"gradient of shape {jnp.shape(g)}: it must give one of that shape, or one weight"
        )
    # σ's min, mean and max for the diagnostics: a rule's closed form saves passes over σ
    summary = None
    if stats and sigma.ndim > 0 and rule.summary is not None:
        summary = rule.summary(g)
    if clip is not None:
        sigma = jnp.clip(sigma, clip[0], clip[1])
        if summary is not None:  # clamping is monotone: min and max move with it, not the mean
            lo, _, hi = (jnp.clip(s, clip[0], clip[1]) for s in summary)
            summary = (lo, jnp.mean(sigma), hi)
    # mixed in float32, or in the update's own precision where that is higher (float64)
    mix_dtype = jnp.promote_types(out_dtype, jnp.float32)
    w_hand = (sigma if mode == "default" else 1.0 - sigma).astype(mix_dtype)
    u_hand_mix = jnp.asarray(u_hand).astype(mix_dtype)
    u_learned_mix = jnp.asarray(u_learned).astype(mix_dtype)
    hand_part = w_hand * u_hand_mix
    learned_part = (1.0 - w_hand) * u_learned_mix
    update = (hand_part + learned_part).astype(out_dtype)
    if rule.observe is not None:
        rule_state = rule.observe(rule_state, u_sigma, u_other)
    if not stats:
        return update, (nan, nan, nan, nan), rule_state
    if sigma.ndim == 0:  # one weight: its own min, mean and max; sums of the members' updates
        summary = (sigma, sigma, sigma)  # (no weighted product to write out)
        hand_l1 = jnp.abs(w_hand) * l1_norm(u_hand_mix)
        learned_l1 = jnp.abs(1.0 - w_hand) * l1_norm(u_learned_mix)
    else:
        if summary is None:
            summary = (jnp.min(sigma), jnp.mean(sigma), jnp.max(sigma))
        hand_l1 = jnp.sum(jnp.abs(hand_part))
        learned_l1 = jnp.sum(jnp.abs(learned_part))
    sigma_min, sigma_mean, sigma_max = summary
    total_l1 = hand_l1 + learned_l1
    mean_w_hand = sigma_mean if mode == "default" else 1.0 - sigma_mean
    share = jnp.where(total_l1 > 0, hand_l1 / jnp.where(total_l1 > 0, total_l1, 1.0), mean_w_hand)
    return update, (sigma_min, sigma_mean, sigma_max, share), rule_state


# σ histogram bins: [0, 1e-9), then half-decades [10^k, 10^(k+1/2)) up to 1 (the last bin
# holds σ = 1, a one-entry tensor's): where a tensor of n entries sits (σ ≈ 1/n) and how
# much of it a clamp [B, A] moves
SIGMA_HIST_EDGES = (0.0, *(10.0 ** (k / 2) for k in range(-18, 1)))


def sigma_histogram(grads, *, sigma="softmax", clip=None, rule_state=None, edges=SIGMA_HIST_EDGES):
    """For every tensor of `grads`, how many of its entries have σ (the weight HUB's rule
    `sigma` gives them at this gradient, clamped into `clip` = (B, A) if given) in each
    bin of `edges`: int32 counts of length `len(edges) − 1`, bin i holding
    edges[i] <= σ < edges[i+1] and the last bin closed on the right (so counts sum to
    the tensor's size). A rule with state needs `rule_state`, a `HubState`'s."""
    clip = _validate_clip(clip)
    rule = resolve_rule(sigma)
    if rule.stateful and rule_state is None:
        raise ValueError(f"sigma rule {rule.name!r} has state: pass rule_state (a HubState's)")
    if rule.uses_updates:
        raise ValueError(
            f"sigma rule {rule.name!r} weighs by the members' updates, which a gradient "
            "alone does not give: read its σ from hub_stats(state) (sigma_mean)"
        )
    edges_arr = jnp.asarray(edges, jnp.float32)
    bins = edges_arr.shape[0] - 1

    def bin_of(g, state=None):
        w, _ = rule.weights(g, state)
        w = jnp.broadcast_to(jnp.asarray(w, jnp.float32), jnp.shape(g)).ravel()
        if clip is not None:
            w = jnp.clip(w, clip[0], clip[1])
        # one fused compare against every edge, not a search loop per tensor
        below = jnp.searchsorted(edges_arr, w, side="right", method="compare_all")
        return jnp.clip(below - 1, 0, bins - 1)

    tree_def = jax.tree_util.tree_structure(grads)
    leaves = tree_def.flatten_up_to(grads)
    states = tree_def.flatten_up_to(rule_state) if rule.stateful else [None] * len(leaves)
    # every tensor's entries binned into its own range of bins (tensor i: i·bins + bin),
    # counted by one bincount over all entries: one scatter in the program instead of
    # one per tensor (XLA:CPU compiles every kernel on its own)
    binned = [
        bin_of(g, st) + i * bins for i, (g, st) in enumerate(zip(leaves, states, strict=True))
    ]
    counts = (
        jnp.bincount(jnp.concatenate(binned), length=len(leaves) * bins)
        .astype(jnp.int32)
        .reshape(len(leaves), bins)
        if leaves
        else jnp.zeros((0, bins), jnp.int32)
    )
    return tree_def.unflatten([counts[i] for i in range(len(leaves))])


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
    sigma: str | SigmaRule | Callable[[jax.Array], jax.Array] = "softmax",
    stats: bool = True,
    nan_guard: bool = False,
) -> optax.GradientTransformationExtraArgs:
    """HUB of a hand-designed and a learned optimizer (see the module docstring).

    Args:
      hand: the hand-designed optimizer (any optax transform).
      learned: the learned optimizer (any optax transform; it may require
        `params` and extra args such as `value=`).
      mode: "default" (eq. 5) or "inverted" (eq. 13) for every tensor.
      clip: `(B, A)` with 0 <= B <= A <= 1: σ is clamped into [B, A].
      blocks: a pytree of mode labels with the params' structure or a prefix of
        it (one label per sub-tree), or a callable `params -> labels`; overrides
        `mode` tensor by tensor.
      sigma: the σ rule: a name of `SIGMA_RULES` ("softmax", the paper's, is the
        default), a `SigmaRule`, or a callable `g -> σ` (g's shape, in [0, 1]).
      stats: keep the per-tensor diagnostics of the last step (`hub_stats`); off,
        they stay NaN and the step skips their reductions.
      nan_guard: per tensor and step, where the learned update has a non-finite
        entry, the tensor takes the hand update instead; `hub_stats` counts the
        steps each tensor fell back ("guard_fired"). The learned member still
        advances on the gradient (its own state is its own).

    Both members see the same gradients and the whole tree and advance every
    step. Extra args given to `update` reach each member that accepts them.
    """
    members.check_member("hand", hand)
    members.check_member("learned", learned)
    _validate_mode(mode, "mode")
    clip = _validate_clip(clip)
    rule = resolve_rule(sigma)
    stats, nan_guard = bool(stats), bool(nan_guard)
    if blocks is not None and not callable(blocks):
        # Labels given as a tree are checked now, not at the first step.
        for label in jax.tree_util.tree_leaves(blocks):
            _validate_mode(label, "every label in blocks")

    def init_fn(params):
        _resolve_modes(mode, blocks, params)  # fail early on mismatched labels
        rule_state = ()
        if rule.stateful:
            rule_state = jax.tree_util.tree_map(rule.init, params)
        return HubState(
            count=jnp.zeros((), jnp.int32),
            members=members.init_members(hand, learned, params),
            stats=_empty_stats(params),
            rule_state=rule_state,
            guard_fired=jax.tree_util.tree_map(lambda _: jnp.zeros((), jnp.int32), params)
            if nan_guard
            else (),
        )

    def update_fn(updates, state: HubState, params=None, **extra_args):
        check_gradients("hub", updates, params, reference=state.stats.sigma_min)
        modes = _resolve_modes(mode, blocks, updates)
        u_hand, u_learned, new_members = members.update_members(
            "hub", hand, learned, updates, state.members, params, extra_args
        )
        tree_def = jax.tree_util.tree_structure(updates)
        g_leaves = tree_def.flatten_up_to(updates)
        h_leaves = tree_def.flatten_up_to(u_hand)
        l_leaves = tree_def.flatten_up_to(u_learned)
        r_leaves = (
            tree_def.flatten_up_to(state.rule_state) if rule.stateful else [None] * len(g_leaves)
        )
        f_leaves = (
            tree_def.flatten_up_to(state.guard_fired) if nan_guard else [None] * len(g_leaves)
        )
        mixed, leaf_stats, rule_leaves, fired_leaves = [], [], [], []
        for g, uh, ul, m, r, f in zip(
            g_leaves, h_leaves, l_leaves, modes, r_leaves, f_leaves, strict=True
        ):
            u, st, r = _mix_leaf(g, uh, ul, m, clip, rule, r, stats)
            if nan_guard:  # the learned update went non-finite: this tensor takes hand's
                fire = jnp.logical_not(jnp.all(jnp.isfinite(jnp.asarray(ul))))
                u = jnp.where(fire, jnp.asarray(uh).astype(u.dtype), u)
                f = f + fire.astype(jnp.int32)
            mixed.append(u)
            leaf_stats.append(st)
            rule_leaves.append(r)
            fired_leaves.append(f)
        stat_trees = [
            jax.tree_util.tree_unflatten(tree_def, list(col))
            for col in zip(*leaf_stats, strict=True)
        ]
        if not stat_trees:  # an empty params tree
            stat_trees = [tree_def.unflatten([])] * 4
        new_state = HubState(
            count=optax.safe_increment(state.count),
            members=new_members,
            stats=HubLeafStats(*stat_trees),
            rule_state=tree_def.unflatten(rule_leaves) if rule.stateful else (),
            guard_fired=tree_def.unflatten(fired_leaves) if nan_guard else (),
        )
        return jax.tree_util.tree_unflatten(tree_def, mixed), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _without_nnx_variables(tree):
    """`tree` with Flax nnx Variables replaced by their arrays (an `nnx.Optimizer` keeps
    its state in Variables, whose pytree adds a "value" key to every path); unchanged
    when nnx is not in use."""
    import sys

    nnx = sys.modules.get("flax.nnx")
    if nnx is None:
        return tree
    return nnx.as_pure(tree)


def hub_stats(state, which: int | None = None) -> dict[str, dict[str, float]]:
    """Diagnostics of the last HUB step by tensor path.

    `state` is a `HubState` or any pytree that contains one (`optax.chain(clip,
    hub(...))`'s state, a Flax `TrainState`, an `nnx.Optimizer`'s `opt_state`, ...);
    with several, `which` picks one (0-based, in pytree order). Returns
    `{path: {"sigma_min", "sigma_mean", "sigma_max", "hand_share"}}` as floats (and,
    with `nan_guard`, the int "guard_fired"); NaN before the first update and when
    the HUB was built with `stats=False`.
    """
    hub_state = _without_nnx_variables(find_one(state, HubState, "hub_stats", which))
    stats = jax.device_get(hub_state.stats)
    paths = leaf_paths(stats.sigma_min)
    columns = [jax.tree_util.tree_leaves(field) for field in stats]
    out = {
        path: {name: float(col[i]) for name, col in zip(HubLeafStats._fields, columns, strict=True)}
        for i, path in enumerate(paths)
    }
    fired = jax.tree_util.tree_leaves(jax.device_get(hub_state.guard_fired))
    if fired:  # nan_guard on (its counters have the params' tree; off, it is ())
        for path, count in zip(paths, fired, strict=True):
            out[path]["guard_fired"] = int(count)
    return out
