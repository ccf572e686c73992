r"""σ rules: how HUB weighs the two members, entry by entry, from one tensor's gradient.

A rule maps the gradient g of one tensor (n entries) to weights σ ∈ [0, 1] of g's
shape; HUB gives σ to the hand update in default mode and to the learned one in
inverted mode (`hubopt.hub(..., sigma=NAME)`, `SIGMA_RULES`).

    softmax      σ = softmax(|g|) over the tensor            the paper; mean 1/n, and
                                                             σ changes with the scale of g
    rank         σ_i = rank of |g_i| among the tensor's |g|,   mean ½ at any width; ties
                 scaled to [0, 1]: (#{|g_j| < |g_i|} +         share their mean rank; a
                 ½ #{j ≠ i: |g_j| = |g_i|}) / (n − 1)          one-entry tensor gets ½
    sigmoid      σ = sigmoid(4 (r − 1)), r = |g| / mean|g|     the entries above the
                                                             tensor's mean magnitude lean
                                                             to σ's side
    softmax_n    σ = min(1, ½ n softmax(min(r, 2)))            the paper's softmax made
                                                             width- and scale-free: mean ½
                                                             before the cap at 1
    lognormal    σ = p₀ + (1 − p₀) sigmoid(1.702 z) for        rank's cheap twin: the rank
                 |g| > 0, p₀/2 for g = 0; z = (log|g| − μ)/s,  of |g| under a log-normal fit
                 μ, s the mean and std of log|g| over the      (1.702 z: the logistic form
                 tensor's nonzero entries (s ≥ 10⁻³), p₀ the   of Φ), O(n), no sort
                 share of zeros
    hyper        σ = sigmoid(λ) for the whole tensor, λ moved   adapts to which member is
                 each step by −β cos(g_t, d_{t−1}) (β = 0.2,   doing better, from the loss's
                 |λ| ≤ 4), d = (σ-side update − other update)  own gradient: no extra pass
    hyper_ema    hyper with D_t = ρ D_{t−1} + d_t (ρ = 0.999)  ... over the last ~1/(1 − ρ)
                 in place of d: cos(g_t, D_{t−1})              steps, not one
    hyper_share  hyper's λ as the σ side's SHARE s of the      members whose steps differ
                 update: σ = s n_o / (s n_o + (1 − s) n_σ),    a thousandfold get the
                 n = ‖U‖₁ of each member's update; d of the    shares s and 1 − s of the
                 updates scaled to ‖U‖₁ = 1                    mixed step, not σ and 1 − σ
    hyper_floor  hyper's σ, raised where needed so that the    hyper, but σ's side keeps
                 σ side's share of the step's L1 mass,          at least b of the step: the
                 s = σ n_σ / (σ n_σ + (1 − σ) n_o), is ≥ b      other member's steps cannot
                 (b = 0.1); σ from s' = max(s, b)              drown it, however large

Every rule but `softmax` is invariant to the gradient's scale (σ(c·g) = σ(g) for
c > 0) and, for i.i.d. gradient entries, keeps its mean weight at any width; all
but the `hyper` rules are non-decreasing in |g| within a tensor. The magnitude r is relative
to the mean |g|, not the rms: with heavy-tailed gradients (Student's t, 4 degrees of
freedom) the rms of a 10-entry tensor is so noisy that a sigmoid of |g|/rms moves
its mean weight by 16% between 10 and 10⁶ entries (|g|/mean|g|: 4%); and r is
capped at 2 inside `softmax_n`, whose mean weight would otherwise be set by the
tensor's largest entries (7% at a cap of 4, 1% at 2). A zero gradient gives σ = ½
everywhere (`softmax`: 1/n).

`lognormal` exists because `rank` sorts: on CPU its sort costs ~450 ms for a tensor of
10⁶ entries (σ = softmax: ~2 ms, lognormal: ~3.5 ms). On i.i.d. normal, t(4) and t(2)
gradients it stays within 0.03–0.08 of `rank` on average (0.25 at most, at 10 entries);
zero entries take the mid-rank of their tie, as in `rank`, and a zero gradient gives ½.

`hyper` is hypergradient descent on the mixing weight (Baydin et al., 2018, for
learning rates): with U = σ U_a + (1 − σ) U_b, dL/dσ at the next step is
⟨g_{t+1}, U_a − U_b⟩, so σ grows where the side it weighs would have lowered the
loss. It keeps per tensor λ and d_{t−1} (one extra buffer of the tensor's size);
the cosine makes the step free of the gradient's and the updates' scales, and the
bound |λ| ≤ 4 keeps the weaker member at ≥ 1.8% so that it can win back. It favours
neither member: in inverted mode λ is default mode's −λ, so the two modes are one rule
(the same run up to float rounding).

`hyper_ema` is the same descent with a memory. Were σ held fixed over the steps so far,
dL/dσ at step t would be ⟨g_t, Σ_{s<t} (U_a − U_b)_s⟩ (to first order): the sum of the
past differences, not the last one. `hyper_ema` discounts that sum by ρ = 0.999 per step
(about the last thousand steps). Where the learned optimizer wins over many steps while
Adam's single steps help more often, the one-step signal drifts toward Adam late in
training and the sum does not: on the bundled optimizer's 13 validation tasks (3 seeds,
final training loss; ρ was chosen there among 0.9, 0.99 and 0.999) `hyper` lands between
the parents on 6 and `hyper_ema` on 3, beating both on 6; it follows the learned
optimizer where that one over-fits, too (their valid loss). The σ study's records say
how it does on the paper's tasks (BENCHMARKS.md).

`hyper_share` is `hyper` for members whose steps differ in size by orders of magnitude
(fine-tuning: AdamW at 1e-4 beside a learned optimizer whose steps are ~1000× larger,
where `hyper`'s σ = 0.98 still leaves the hand member 0.1% of the update). Its λ sets
the σ side's share s = sigmoid(λ) of the mixed update's L1 mass, and σ follows from the
members' update norms n_σ, n_o of this step:

    σ = s n_o / (s n_o + (1 − s) n_σ),   so  ‖σ U_σ‖₁ : ‖(1 − σ) U_o‖₁ = s : (1 − s),

and U = M (s Û_σ + (1 − s) Û_o) with Û = U/‖U‖₁ and M = 1/(s/n_σ + (1 − s)/n_o) (a
harmonic mean: at s = ½ the step is at most twice the smaller member's). λ descends
dL/ds = M ⟨g, Û_σ − Û_o⟩ as `hyper` does (cosine, β, bound), so d is the difference of
the normalised updates. Where a member's update is zero (or has a non-finite entry)
the rule falls back to σ = s. It reads the members' updates of the step
(`uses_updates`), two L1 norms per tensor that HUB's diagnostics take anyway.

`hyper_floor` keeps `hyper` (its λ, its one-step difference) and bounds what the weight
does instead of the weight: the paper's clipping HUB clamps σ into [B, A], which still
leaves the hand member 0.1% of a step that is a thousand times larger on the other side
(fine-tuning). `hyper_floor` raises σ's side's share of the mixed update's L1 mass,
s = σ n_σ / (σ n_σ + (1 − σ) n_o), to at least b and takes σ = s' n_o / (s' n_o +
(1 − s') n_σ) from s' = max(s, b) (`hyper_share`'s map). Where σ's side already has b
of the step it is `hyper` bit for bit; where the other member's steps are a thousand
times larger, σ's side still makes b of the step, and the step is then at most about
1/b times σ's side's own. Only σ's side has the floor (in default mode the hand
optimizer: HUB's stability comes from it): a floor on both sides would also tie the
step to a member whose steps are tiny, and on LTC trajectory fitting that cost more
than it saved (valid MSE 0.082 against `hyper`'s 0.070 and 0.071 with the floor on one
side, 3 seeds; b was chosen on the valid split between 0.05 and 0.1, BENCHMARKS.md).
Where a member's update is zero (or has a non-finite entry) σ is `hyper`'s.

Non-finite gradients: σ sees a NaN or infinite entry as |g| = 0, so it stays
inside its own entry (whose update the members make non-finite or not, as they
would alone) and never spreads to the rest of its tensor through the tensor's
max, sum or mean; `hyper` likewise leaves non-finite entries out of its cosine
and its stored difference. (The paper's softmax would turn a whole tensor's σ
into NaN: ∞ − ∞.)

A rule of one's own: any callable `g -> σ` (same shape, values in [0, 1]); or a
`SigmaRule` with state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

__all__ = [
    "RECOMMENDED_MODE",
    "RECOMMENDED_SIGMA",
    "SIGMA_RULES",
    "SigmaRule",
    "layer_softmax",
    "resolve_rule",
]

HYPER_STEP = 0.2  # β: the change of λ per step at |cos| = 1
HYPER_BOUND = 4.0  # |λ| ≤ 4: σ ∈ [0.018, 0.982]
HYPER_MEMORY = 0.999  # ρ of hyper_ema: the past differences it sums, discounted per step
SIGMOID_SLOPE = 4.0
SOFTMAX_N_CAP = 2.0  # r is capped here inside softmax_n


def _finite32(x) -> jax.Array:
    """x in float32, a non-finite entry counted as 0 (the non-finite policy)."""
    x = jnp.asarray(x).astype(jnp.float32)
    return jnp.where(jnp.isfinite(x), x, 0.0)


def _abs32(g) -> jax.Array:
    """|g| in float32, a non-finite entry counted as 0."""
    return jnp.abs(_finite32(g))


def layer_softmax(g: jax.Array) -> jax.Array:
    """σ = softmax(|g|) over all entries of one tensor, in float32, same shape as g.

    Stable for any finite |g| (the max is subtracted before exp); a one-entry
    tensor gets σ = 1 and an empty one an empty σ.
    """
    if jnp.size(g) == 0:
        return _abs32(g)
    _, _, e, z = _softmax_parts(g)
    return e / z


def _softmax_parts(g: jax.Array):
    """|g|, max|g|, e = exp(|g| − max|g|) and Z = Σ e: what σ and its summary share."""
    a = _abs32(g)
    a_max = jnp.max(a)
    e = jnp.exp(a - a_max)
    return a, a_max, e, jnp.sum(e)


def softmax_summary(g: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """min, mean and max of `layer_softmax(g)` from the softmax's own reductions:
    max σ = 1/Z, min σ = exp(min|g| − max|g|)/Z, mean σ = 1/n, so that σ is not reduced
    again (XLA merges the max and the sum with those of the weights: the same ops)."""
    a, a_max, _, z = _softmax_parts(g)
    return jnp.exp(jnp.min(a) - a_max) / z, jnp.float32(1.0 / a.size), 1.0 / z


def _relative_magnitude(a: jax.Array) -> jax.Array:
    """r = |g| / mean|g|, and 1 everywhere when g is zero."""
    scale = jnp.mean(a)
    return jnp.where(scale > 0, a / jnp.where(scale > 0, scale, 1.0), 1.0)


def rank_weights(g: jax.Array) -> jax.Array:
    """σ_i = (#{j: |g_j| < |g_i|} + ½ #{j ≠ i: |g_j| = |g_i|}) / (n − 1); ½ when n = 1."""
    a = _abs32(g)
    if a.size <= 1:
        return jnp.full(a.shape, 0.5, jnp.float32)
    flat = a.ravel()
    ordered = jnp.sort(flat)
    below = jnp.searchsorted(ordered, flat, side="left")
    ties = jnp.searchsorted(ordered, flat, side="right") - below - 1
    return ((below + 0.5 * ties) / (flat.size - 1)).astype(jnp.float32).reshape(a.shape)


def sigmoid_weights(g: jax.Array) -> jax.Array:
    """σ = sigmoid(4 (|g| / mean|g| − 1))."""
    a = _abs32(g)
    if a.size == 0:
        return a
    return jax.nn.sigmoid(SIGMOID_SLOPE * (_relative_magnitude(a) - 1.0))


def softmax_n_weights(g: jax.Array) -> jax.Array:
    """σ = min(1, ½ n softmax(min(|g| / mean|g|, 2))): mean ½ before the cap at 1."""
    a = _abs32(g)
    if a.size == 0:
        return a
    x = jnp.minimum(_relative_magnitude(a), SOFTMAX_N_CAP)
    e = jnp.exp(x - jnp.max(x))
    return jnp.minimum(1.0, 0.5 * e / jnp.mean(e))


LOGISTIC_PROBIT = 1.702  # sigmoid(1.702 z) ≈ Φ(z) within 0.01
LOGNORMAL_MIN_SPREAD = 1e-3  # the smallest std of log|g| that lognormal divides by


def lognormal_weights(g: jax.Array) -> jax.Array:
    """σ = p₀ + (1 − p₀) sigmoid(1.702 (log|g| − μ)/s) where g ≠ 0, p₀/2 where g = 0."""
    a = _abs32(g)
    if a.size == 0:
        return a
    nonzero = a > 0
    count = jnp.sum(nonzero)
    p0 = 1.0 - count / a.size
    # log(|g| / max|g|): scale-free before the logarithm, and exactly 0 for ties at the max
    z = jnp.log(jnp.where(nonzero, a / jnp.where(nonzero, jnp.max(a), 1.0), 1.0))
    mu = jnp.sum(jnp.where(nonzero, z, 0.0)) / jnp.maximum(count, 1)
    var = jnp.sum(jnp.where(nonzero, jnp.square(z - mu), 0.0)) / jnp.maximum(count, 1)
    # a spread below LOGNORMAL_MIN_SPREAD (0.1% in |g|) is a tie, not a scale to divide by
    x = (z - mu) / jnp.maximum(jnp.sqrt(var), LOGNORMAL_MIN_SPREAD)
    return jnp.where(
        nonzero, p0 + (1.0 - p0) * jax.nn.sigmoid(LOGISTIC_PROBIT * x), 0.5 * p0
    ).astype(jnp.float32)


class HyperState(NamedTuple):
    """`hyper`'s state of one tensor: the logit λ of σ and the last update difference d
    (`hyper_ema`: their discounted sum D)."""

    logit: jax.Array
    diff: jax.Array


def _cosine(x: jax.Array, y: jax.Array) -> jax.Array:
    """cos(x, y) over x's finite entries; y is finite (`hyper` stores it so)."""
    x, y = _finite32(x).ravel(), jnp.asarray(y, jnp.float32).ravel()
    norms = jnp.sqrt(jnp.sum(x * x) * jnp.sum(y * y))
    return jnp.where(norms > 0, jnp.sum(x * y) / jnp.where(norms > 0, norms, 1.0), 0.0)


def _hyper_init(param) -> HyperState:
    return HyperState(
        logit=jnp.zeros((), jnp.float32), diff=jnp.zeros(jnp.shape(param), jnp.float32)
    )


def _hyper_weights(g, state: HyperState):
    logit = jnp.clip(
        state.logit - HYPER_STEP * _cosine(jnp.asarray(g), state.diff), -HYPER_BOUND, HYPER_BOUND
    )
    return jax.nn.sigmoid(logit).astype(jnp.float32), state._replace(logit=logit)


def _hyper_observe(state: HyperState, u_sigma, u_other) -> HyperState:
    return state._replace(diff=_finite32(u_sigma) - _finite32(u_other))


def l1_norm(u) -> jax.Array:
    """‖u‖₁ in float32; non-finite where u has a non-finite entry. HUB's diagnostics sum
    the same expression, so that XLA computes it once (a second, different sum over an
    expensive member's update, say a finite-masked one, made XLA compute VeLO's update
    twice: +50% on HUB(Adam, VeLO)'s step)."""
    return jnp.sum(jnp.abs(jnp.asarray(u, jnp.float32)))


def _norms(u_sigma, u_other):
    """(n_σ, n_o, both): the members' L1 norms, and whether both are positive and finite
    (else the share rules fall back, and a non-finite entry stays in its entry)."""
    n_sigma, n_other = l1_norm(u_sigma), l1_norm(u_other)
    both = (n_sigma > 0) & (n_other > 0) & jnp.isfinite(n_sigma) & jnp.isfinite(n_other)
    return n_sigma, n_other, both


def _weight_for_share(share, n_sigma, n_other, both):
    """The σ that gives σ's side the share s of the step's L1 mass, s n_o / (s n_o +
    (1 − s) n_σ), where `both` norms are usable (else s itself)."""
    denom = share * n_other + (1.0 - share) * n_sigma
    return jnp.where(both, share * n_other / jnp.where(both, denom, 1.0), share)


def _share_weights(g, state: HyperState, u_sigma, u_other):
    """σ = s n_o / (s n_o + (1 − s) n_σ), s = sigmoid(λ) after `hyper`'s step on λ; σ = s
    where a member's update is zero or non-finite."""
    logit = jnp.clip(
        state.logit - HYPER_STEP * _cosine(jnp.asarray(g), state.diff), -HYPER_BOUND, HYPER_BOUND
    )
    n_sigma, n_other, both = _norms(u_sigma, u_other)
    sigma = _weight_for_share(jax.nn.sigmoid(logit), n_sigma, n_other, both)
    return sigma.astype(jnp.float32), state._replace(logit=logit)


SHARE_FLOOR = 0.1  # b of hyper_floor: σ's side makes at least this share of the step


def _floor_weights(g, state: HyperState, u_sigma, u_other):
    """`hyper`'s σ where σ's side makes at least b of the step's L1 mass; else σ = b n_o /
    (b n_o + (1 − b) n_σ), the σ that gives it b."""
    sigma, state = _hyper_weights(g, state)
    n_sigma, n_other, both = _norms(u_sigma, u_other)
    mass_sigma, mass_other = sigma * n_sigma, (1.0 - sigma) * n_other
    share = mass_sigma / jnp.where(both, mass_sigma + mass_other, 1.0)
    raised = _weight_for_share(SHARE_FLOOR, n_sigma, n_other, both)
    return jnp.where(both & (share < SHARE_FLOOR), raised, sigma).astype(jnp.float32), state


SHARE_TIE = 1e-5  # ‖Û_σ − Û_o‖₁ below this (of at most 2): the members point the same way


def _share_observe(state: HyperState, u_sigma, u_other) -> HyperState:
    """d = Û_σ − Û_o, each member's update scaled to L1 norm 1 (a zero one stays 0); 0
    where the two point the same way up to rounding (else the cosine of g with rounding
    noise would move λ)."""

    def unit(u):
        u = _finite32(u)
        n = jnp.sum(jnp.abs(u))
        return u / jnp.where(n > 0, n, 1.0)

    d = unit(u_sigma) - unit(u_other)
    return state._replace(diff=jnp.where(jnp.sum(jnp.abs(d)) > SHARE_TIE, d, 0.0))


def _hyper_ema_observe(state: HyperState, u_sigma, u_other) -> HyperState:
    """D ← ρ D + (σ-side update − other update): `hyper`'s difference summed over the past."""
    return state._replace(
        diff=HYPER_MEMORY * state.diff + (_finite32(u_sigma) - _finite32(u_other))
    )


class SigmaRule(NamedTuple):
    """A σ rule. Stateless: `weights(g, None) -> (σ, None)`. With state (per tensor):
    `init(param) -> state`, `weights(g, state) -> (σ, state)` before the mix and
    `observe(state, u_sigma, u_other) -> state` after it (u_sigma: the update σ weighs).
    With `uses_updates`, `weights(g, state, u_sigma, u_other)` also reads the members'
    updates of this step (`hyper_share`).
    σ has g's shape, or is 0-d: one weight for the whole tensor (`hyper`).

    summary: optional `g -> (min σ, mean σ, max σ)` in closed form, so that HUB's
    diagnostics need no further pass over σ (else HUB reduces σ itself).
    scale_free, width_free, monotone: the properties the rule claims (tested)."""

    name: str
    weights: Callable[[jax.Array, Any], tuple[jax.Array, Any]]
    init: Callable[[jax.Array], Any] | None = None
    observe: Callable[[Any, jax.Array, jax.Array], Any] | None = None
    summary: Callable[[jax.Array], tuple[jax.Array, jax.Array, jax.Array]] | None = None
    scale_free: bool = True
    width_free: bool = True
    monotone: bool = True
    uses_updates: bool = False

    @property
    def stateful(self) -> bool:
        return self.init is not None


def _stateless(name: str, fn: Callable[[jax.Array], jax.Array], **claims) -> SigmaRule:
    return SigmaRule(name=name, weights=lambda g, state: (fn(g), state), **claims)


def _hypergradient_rule(name: str, observe) -> SigmaRule:
    """`hyper`'s descent on λ, remembering the update differences as `observe` does."""
    return SigmaRule(
        name=name, weights=_hyper_weights, init=_hyper_init, observe=observe, monotone=False
    )


def _update_rule(name: str, weights, observe) -> SigmaRule:
    """A hypergradient rule whose σ also reads the members' updates of the step."""
    return SigmaRule(
        name=name,
        weights=weights,
        init=_hyper_init,
        observe=observe,
        monotone=False,
        uses_updates=True,
    )


SIGMA_RULES: dict[str, SigmaRule] = {
    "softmax": _stateless(
        "softmax", layer_softmax, summary=softmax_summary, scale_free=False, width_free=False
    ),
    "rank": _stateless("rank", rank_weights),
    "sigmoid": _stateless("sigmoid", sigmoid_weights),
    "softmax_n": _stateless("softmax_n", softmax_n_weights),
    "lognormal": _stateless("lognormal", lognormal_weights),
    "hyper": _hypergradient_rule("hyper", _hyper_observe),
    "hyper_ema": _hypergradient_rule("hyper_ema", _hyper_ema_observe),
    "hyper_share": _update_rule("hyper_share", _share_weights, _share_observe),
    "hyper_floor": _update_rule("hyper_floor", _floor_weights, _hyper_observe),
}


# The rule hubopt recommends, chosen from the σ study's records by one stated rule
# (`hubopt.bench.sigma_choice`; BENCHMARKS.md's "sigma-choice" block): None while no rule
# qualifies; RECOMMENDED_MODE is the mode it was chosen in (`hub(..., mode=...)`).
# tests/test_sigma_choice.py holds both to that choice on the committed records.
RECOMMENDED_SIGMA: str | None = "hyper_floor"
RECOMMENDED_MODE: str = "default"


def resolve_rule(sigma) -> SigmaRule:
    """The `SigmaRule` that `sigma` names (a key of `SIGMA_RULES`), is, or wraps (a
    callable `g -> σ`)."""
    if isinstance(sigma, SigmaRule):
        return sigma
    if isinstance(sigma, str):
        if sigma not in SIGMA_RULES:
            raise ValueError(f"unknown sigma rule {sigma!r}; rules: {', '.join(SIGMA_RULES)}")
        return SIGMA_RULES[sigma]
    if callable(sigma):
        name = getattr(sigma, "__name__", "custom")
        return _stateless(name, sigma, scale_free=False, width_free=False, monotone=False)
    raise TypeError(
        f"sigma must be a rule name ({', '.join(SIGMA_RULES)}), a SigmaRule or a callable "
        f"g -> weights, got {type(sigma).__name__}"
    )
