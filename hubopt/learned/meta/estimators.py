r"""Meta-gradient estimators: antithetic ES and Persistent ES (PES).

Antithetic ES for an objective f(θ) (Salimans et al. 2017): with ε_i ~ N(0, I),

    ĝ = 1/N Σ_i ε_i · (f(θ + σε_i) − f(θ − σε_i)) / (2σ)

an unbiased estimate of ∇ of the Gaussian-smoothed f (exact in mean for a
quadratic). PES (Vicol et al. 2021) runs truncated unrolls of an inner problem
whose state persists across truncations; particle i keeps the running sum
ξ_i = Σ_τ ε_{i,τ} of the perturbations it has used since its inner run began, and

    ĝ = 1/N Σ_i ξ_i · (L⁺_{i} − L⁻_{i}) / (2σ)

is unbiased for the gradient of the sum of truncation losses of a whole run.
With `persistent=False` ξ_i = ε_i (truncated ES: cheaper, biased to short horizons).

Per-task normalisation: with `normalize="std"` the antithetic differences
Δ_i = L⁺_i − L⁻_i are divided by their standard deviation over the particles,
so that every task contributes a gradient of comparable size whatever its loss
scale or how noisy it is (like ES fitness normalisation).

The truncation loss of one inner run (a `MetaTask` trained by the learned
optimizer, optionally inside HUB with a hand-designed partner) mixes training
and held-out loss:

    L = 1/K Σ_{t in truncation} ℓ(log loss_t)  +  w · ℓ(log eval_loss at the truncation's end)

where ℓ clamps into [log loss₀ − floor, log loss₀ + margin] (loss₀ the run's
first loss) and a non-finite value counts as the upper end: a diverging inner
run costs a large finite penalty, never a NaN, and driving the training loss
below a fixed fraction of its start earns nothing (`floor`: 6.9 is a
thousandth, 9.2 — the bundled recipe's — a ten-thousandth), so memorising the training set
does not pay for a worse held-out loss. A particle whose parameters became
non-finite, or whose run is over, restarts from a new initialisation (new task
instance, new horizon) and its ξ is zeroed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from hubopt._src.train_step import train_step
from hubopt.learned.meta.task_distribution import MetaTask
from hubopt.learned.small_lopt.architecture import MLPLOpt

NORMALIZE = (None, "std")


def _tree_normal(key, tree):
    leaves, tdef = jax.tree_util.tree_flatten(tree)
    keys = jax.random.split(key, len(leaves))
    return tdef.unflatten(
        [jax.random.normal(k, jnp.shape(x), jnp.float32) for k, x in zip(keys, leaves, strict=True)]
    )


def _axpy(a, x, y):
    """a·x + y over trees (a scalar)."""
    return jax.tree_util.tree_map(lambda u, v: a * u + v, x, y)


def _normalize_deltas(delta_N: jax.Array, normalize: str | None) -> jax.Array:
    if normalize is None:
        return delta_N
    if normalize == "std":
        return delta_N / (jnp.std(delta_N) + 1e-8)
    raise ValueError(f"normalize must be one of {NORMALIZE}, got {normalize!r}")


def _weighted_sum(w_N: jax.Array, tree_N):
    """Σ_i w_i x_i over the leading axis of every leaf."""
    return jax.tree_util.tree_map(lambda x: jnp.tensordot(w_N, x, axes=1), tree_N)


def es_gradient(
    f: Callable[[Any, jax.Array], jax.Array],
    theta,
    key: jax.Array,
    *,
    num_pairs: int,
    sigma: float,
    normalize: str | None = None,
    penalty: float = 1e6,
):
    """Antithetic ES estimate of ∇f(θ); `f(θ, key)` is evaluated at θ ± σε with the
    same key (common random numbers). Vmapped over pairs; jittable.

    Non-finite values of f count as `penalty`. Returns (ĝ, mean of f⁺ and f⁻).
    """
    if num_pairs < 1 or sigma <= 0:
        raise ValueError(f"need num_pairs >= 1 and sigma > 0, got {num_pairs}, {sigma}")
    k_eps, k_f = jax.random.split(key)
    eps_N = jax.vmap(lambda k: _tree_normal(k, theta))(jax.random.split(k_eps, num_pairs))
    f_keys = jax.random.split(k_f, num_pairs)

    def pair(e, k):
        lp = f(_axpy(sigma, e, theta), k)
        lm = f(_axpy(-sigma, e, theta), k)
        safe = lambda v: jnp.where(jnp.isfinite(v), v, penalty)  # noqa: E731
        return safe(lp), safe(lm)

    lp_N, lm_N = jax.vmap(pair)(eps_N, f_keys)
    delta = _normalize_deltas(lp_N - lm_N, normalize)
    grad = _weighted_sum(delta / (2.0 * sigma * num_pairs), eps_N)
    return grad, 0.5 * (jnp.mean(lp_N) + jnp.mean(lm_N))


# ----------------------------------------------------------- truncated unrolls


class PairState(NamedTuple):
    """One antithetic particle: the + and − inner runs and their shared bookkeeping."""

    params_pos: Any
    params_neg: Any
    opt_pos: Any
    opt_neg: Any
    step: jax.Array  # int32, steps taken in this inner run
    horizon: jax.Array  # int32, length of this inner run
    task_key: jax.Array  # key of this instance (init, data, batches)
    log_loss0: jax.Array  # log of the first loss: the divergence cap is relative to it
    xi: Any  # PES accumulator Σ ε (θ-shaped)


@dataclasses.dataclass(frozen=True)
class Unroll:
    """How one task is trained by the learned optimizer in truncations.

    Attributes:
      task: the inner problem.
      lopt: the learned optimizer architecture.
      trunc_len: K, inner steps per truncation.
      horizons: lengths of inner runs to draw from (multiples of K).
      eval_weight: w, weight of the held-out log loss after every truncation.
      margin: the cap is log loss₀ + margin (a diverging run pays it every step).
      floor: no reward below log loss₀ − floor (6.9: a thousandth of the first
        loss), so that memorising the training set is not worth overfitting.
      hub_hand: None for the plain learned optimizer, or a constant-rate
        preset name of `hubopt.baselines` ("adam", "adamax", "adamw"): the
        learned optimizer is trained inside `hubopt.hub(hand, learned)`.
      hub_mode: HUB's mode when `hub_hand` is given.
    """

    task: MetaTask
    lopt: MLPLOpt
    trunc_len: int = 50
    horizons: tuple[int, ...] = (200, 500, 1000)
    eval_weight: float = 1.0
    margin: float = 2.0
    floor: float = 6.9
    hub_hand: str | None = None
    hub_mode: str = "default"

    def __post_init__(self):
        if self.trunc_len < 1:
            raise ValueError(f"trunc_len must be >= 1, got {self.trunc_len}")
        if not self.horizons or any(h < 1 or h % self.trunc_len for h in self.horizons):
            raise ValueError(
                f"horizons must be positive multiples of trunc_len={self.trunc_len}, "
                f"got {self.horizons}"
            )
        if self.hub_hand is not None:
            self.hand_optimizer()  # fail early on a bad name

    def hand_optimizer(self):
        from hubopt.baselines import preset

        return preset(self.hub_hand)

    def make_optimizer(self, theta, num_steps):
        learned = self.lopt.optimizer(theta, num_steps)
        if self.hub_hand is None:
            return learned
        from hubopt import hub

        return hub(self.hand_optimizer(), learned, mode=self.hub_mode)

    # -- one particle ---------------------------------------------------------

    def reset(self, theta, key, base) -> PairState:
        """A fresh particle: new instance, init, horizon; ξ = 0."""
        k_task, k_h = jax.random.split(key)
        horizons = jnp.asarray(self.horizons, jnp.int32)
        horizon = horizons[jax.random.randint(k_h, (), 0, len(self.horizons))]
        task = self.task.task_on(self.task.instance_data(jax.random.fold_in(k_task, 1), base))
        params = task.init(jax.random.fold_in(k_task, 2))
        opt = self.make_optimizer(theta, horizon)
        opt_state = opt.init(params)
        batch = task.batch(jax.random.fold_in(k_task, 3), 0)
        loss0 = task.loss(params, batch)
        return PairState(
            params_pos=params,
            params_neg=params,
            opt_pos=opt_state,
            opt_neg=opt_state,
            step=jnp.zeros((), jnp.int32),
            horizon=horizon,
            task_key=k_task,
            log_loss0=jnp.log(jnp.maximum(loss0, 1e-8)),
            xi=jax.tree_util.tree_map(jnp.zeros_like, theta),
        )

    def _safe_log(self, loss, cap):
        """log loss clamped into [cap − margin − floor, cap]; non-finite -> cap."""
        x = jnp.log(jnp.maximum(loss, 1e-30))
        x = jnp.maximum(x, cap - self.margin - self.floor)
        return jnp.where(jnp.isfinite(x), jnp.minimum(x, cap), cap)

    def run_side(self, theta, params, opt_state, st: PairState, base):
        """K inner steps from (params, opt_state); returns the new pair and the loss L."""
        task = self.task.task_on(self.task.instance_data(jax.random.fold_in(st.task_key, 1), base))
        opt = self.make_optimizer(theta, st.horizon)
        cap = st.log_loss0 + self.margin

        step = train_step(task, opt, lambda t: jax.random.fold_in(st.task_key, 1000 + t))

        def body(carry, t):
            carry, v = step(carry, t)
            return carry, self._safe_log(v, cap)

        steps = st.step + jnp.arange(self.trunc_len, dtype=jnp.int32)
        (params, opt_state), logs_K = jax.lax.scan(body, (params, opt_state), steps)
        ev = self._safe_log(task.eval_loss(params), cap)
        loss = jnp.mean(logs_K) + self.eval_weight * ev
        finite = jnp.all(
            jnp.asarray([jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(params)])
        )
        return params, opt_state, loss, finite

    def truncation(self, theta, eps, st: PairState, base, sigma: float, persistent: bool):
        """One antithetic truncation of one particle; returns (L⁺, L⁻, ξ, advanced state)."""
        theta_p = _axpy(sigma, eps, theta)
        theta_m = _axpy(-sigma, eps, theta)
        pp, op, lp, fp = self.run_side(theta_p, st.params_pos, st.opt_pos, st, base)
        pm, om, lm, fm = self.run_side(theta_m, st.params_neg, st.opt_neg, st, base)
        xi = _axpy(1.0, eps, st.xi) if persistent else eps
        new = st._replace(
            params_pos=pp,
            params_neg=pm,
            opt_pos=op,
            opt_neg=om,
            step=st.step + self.trunc_len,
            xi=xi,
        )
        return lp, lm, xi, new, jnp.logical_and(fp, fm)

    def full_objective(self, theta, key, base, horizon_index: int = 0):
        """Σ over truncations of L for one whole run with fixed θ (no perturbation)."""
        st = self.reset(theta, key, base)
        h = self.horizons[horizon_index]
        st = st._replace(horizon=jnp.asarray(h, jnp.int32))
        zero = jax.tree_util.tree_map(jnp.zeros_like, theta)

        def body(st, _):
            lp, _, _, st, _ = self.truncation(theta, zero, st, base, 1.0, True)
            return st, lp

        _, losses = jax.lax.scan(body, st, None, length=h // self.trunc_len)
        return jnp.sum(losses)


# --------------------------------------------------------------------- PES


@dataclasses.dataclass(frozen=True)
class PES:
    """(Persistent) antithetic ES over truncated unrolls of one task, vmapped over
    `num_pairs` particles, each its own task instance.

    `init(theta, key, base)` -> particle states; `step(theta, states, key, base)`
    -> (ĝ, new states, metrics). Jit `step` (theta, states, key, base are all
    arguments, so one compile serves every outer step).
    """

    unroll: Unroll
    num_pairs: int = 8
    sigma: float = 0.01
    persistent: bool = True
    normalize: str | None = "std"

    def __post_init__(self):
        if self.num_pairs < 1:
            raise ValueError(f"num_pairs must be >= 1, got {self.num_pairs}")
        if self.sigma <= 0:
            raise ValueError(f"sigma must be > 0, got {self.sigma}")
        _normalize_deltas(jnp.zeros(2), self.normalize)

    def init(self, theta, key, base, *, same_instance: bool = False) -> PairState:
        """Particle states, each its own instance and horizon; `same_instance` gives
        every particle the same instance (tests). Keys are raw uint32[2] keys."""
        keys = jax.random.split(key, self.num_pairs)
        if same_instance:
            keys = jnp.stack([key] * self.num_pairs)
        return jax.vmap(lambda k: self.unroll.reset(theta, k, base))(keys)

    def step(self, theta, states: PairState, key, base):
        u = self.unroll
        k_eps, k_reset = jax.random.split(key)
        eps_N = jax.vmap(lambda k: _tree_normal(k, theta))(jax.random.split(k_eps, self.num_pairs))

        def one(st, e):
            return u.truncation(theta, e, st, base, self.sigma, self.persistent)

        lp, lm, xi, new, finite = jax.vmap(one)(states, eps_N)
        delta = _normalize_deltas(lp - lm, self.normalize)
        grad = _weighted_sum(delta / (2.0 * self.sigma * self.num_pairs), xi)

        done = jnp.logical_or(new.step >= new.horizon, jnp.logical_not(finite))
        fresh = jax.vmap(lambda k: u.reset(theta, k, base))(
            jax.random.split(k_reset, self.num_pairs)
        )
        new = jax.tree_util.tree_map(
            lambda a, b: jnp.where(done.reshape((-1,) + (1,) * (a.ndim - 1)), a, b), fresh, new
        )
        metrics = {
            "meta_loss": 0.5 * (jnp.mean(lp) + jnp.mean(lm)),
            "diverged": jnp.mean(1.0 - finite.astype(jnp.float32)),
            "done": jnp.mean(done.astype(jnp.float32)),
        }
        return grad, new, metrics
