r"""The math of one VeLO update (learned_optimization ``HyperV2``, VELO_SPEC §4).

Layout: hubopt keeps the decay/channel axis FIRST, ``(c,) + S``, where the
reference keeps it last (``S + (c,)``); element-wise loops then run over the
contiguous parameter axis. The second moment is stored as ``S`` (reference:
``S + (1,)``).

One update, for tensors p with raw gradients g and loss L:

    ĝ = clip(g, ±1000)                                            (§4.2)
    loss buffer ← L;  φ = loss features                           (§4.1)
    X[t] = per-tensor features of the OLD p, m, v                 (§4.3)
    (Cn, ℓ, h, c) = LSTM(X, h, c)                                  (§4.4)
    m ← β m + (1-β) ĝ,  v ← .999 v + .001 ĝ²,  R/C/D factored EMAs (§4.5)
    W_t = 100 · mean_k(Cn[t,k] W[k])                               (§4.6)
    x_i = 14 groups of per-parameter inputs, x̃_i = x_i·rsqrt(1e-5 + mean(x_i²))
    o = MLP_t(x̃);  step = ℓ_t·((o₀·(scale·exp(0.001·o₁)))·0.001)  (§4.7–4.8)
    p ← p − step

Quirks of the released checkpoint (VELO_SPEC §9) are marked "QUIRK (n)" where
they happen.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

F32 = jnp.float32

GRAD_CLIP = 1000.0
MOM_DECAYS = np.asarray([0.9, 0.99, 0.999], np.float32)
RMS_DECAY = np.float32(0.999)
FAC_DECAYS = np.asarray([0.9, 0.99, 0.999], np.float32)
FAC_EPS = 1e-30
TIMESCALES = np.asarray([0.03, 0.1, 0.2, 0.4, 0.6, 0.8, 0.9, 1.0, 1.1], np.float32)
N_LOSS_SLOTS = 10
LOSS_MIN_INIT = 999999999999.0
EXP_MULT = 0.001
STEP_MULT = 0.001
MIX_SCALE = 100.0


def factored_dims(shape) -> tuple[int, int] | None:
    """(d1, d0): the second-largest and the largest axis, or None for rank < 2.

    QUIRK (7)/(8): every tensor with >= 2 dims is factored, even (1, 6). The
    reference uses numpy's default (unstable) argsort; we use a STABLE sort, so
    on ties the later axis counts as larger, which is what the reference gave
    on the machine that made the golden data.
    """
    if len(shape) < 2:
        return None
    order = np.argsort(np.asarray(shape), kind="stable")
    return int(order[-2]), int(order[-1])


# --------------------------------------------------------------------------- loss buffer


class LossBuffer(NamedTuple):
    """EMAs of the loss at 10 half-lives, with bias correction and running minima."""

    means: jax.Array  # (10,)
    running_min: jax.Array  # (10,)
    iteration: jax.Array  # int32 scalar
    decays: jax.Array  # (10,)


def loss_buffer_init(num_steps: int) -> LossBuffer:
    """Half-lives logspace(1, log10 N, 10); decays exp(-1/h) (float32 throughout)."""
    halflife = jnp.logspace(1.0, jnp.log10(jnp.float32(num_steps)), N_LOSS_SLOTS, dtype=F32)
    decays = jnp.exp(-1.0 / halflife)
    return LossBuffer(
        means=jnp.zeros((N_LOSS_SLOTS,), F32),
        running_min=jnp.full((N_LOSS_SLOTS,), LOSS_MIN_INIT, F32),
        iteration=jnp.zeros((), jnp.int32),
        decays=decays,
    )


def loss_buffer_update(buf: LossBuffer, loss) -> LossBuffer:
    d, k = buf.decays, buf.iteration
    cor = buf.means / (1.0 - lax.pow(d, k + 1))  # int32 exponent: XLA pow, as the reference
    approx_max = jnp.where(k == 0, loss, jnp.max(cor))
    loss = jnp.minimum(jnp.abs(approx_max) * 2.0, loss)  # clips loss spikes upward only
    means = buf.means * d + loss * (1.0 - d)
    running_min = jnp.minimum(buf.running_min, means / (1.0 - lax.pow(d, k + 1)))
    return LossBuffer(means, running_min, k + 1, d)


def loss_features(buf: LossBuffer) -> jax.Array:
    """φ_j = clip((ĉ_j − r_j)/max(1e-8, ĉ_{j+1} − r_j) − 1, ±1), j = 0..8, from the new buffer."""
    cor = buf.means / (1.0 - lax.pow(buf.decays, buf.iteration))
    slower, cor, rmin = cor[1:], cor[:-1], buf.running_min[:-1]
    feat = jnp.clip((cor - rmin) / jnp.maximum(1e-8, slower - rmin) - 1.0, -1.0, 1.0)
    # QUIRK (6): the loss features are zero for the first two updates.
    return jnp.where(buf.iteration <= 2, feat * 0.0, feat)


# --------------------------------------------------------------------------- LSTM


def _clip_log_abs(x):
    """λ(x) = 0.5·clip(ln(1e-8 + |10x|), −5, 5)."""
    return jnp.clip(jnp.log(1e-8 + jnp.abs(x * 10.0)), -5.0, 5.0) * 0.5


def lstm_features(p, m, v, fraction, loss_feat) -> jax.Array:
    """The 30 per-tensor LSTM inputs from the OLD p, m (3,)+S and v (S).

    QUIRK (3): the LSTM sees the momenta and second moment of the previous
    step; the current gradient does not enter (only the loss does, via φ).
    """
    axes = tuple(range(1, m.ndim))  # the S axes of (3,)+S; empty for a scalar (QUIRK 10)
    s = lax.rsqrt(jnp.maximum(1e-9, jnp.mean(jnp.square(p))))
    ms = m * s
    vs = v * s
    mean_m = jnp.mean(ms, axis=axes, keepdims=True)  # (3,1,..)
    var_m = jnp.mean(jnp.square(ms - mean_m), axis=axes)  # (3,)
    mean_v = jnp.mean(vs)
    # QUIRK (1) var_rms bug: the second moment is centred on the MOMENTUM means,
    # giving 3 values instead of 1 (so the LSTM input is 30 wide, not 28).
    var_v = jnp.mean(jnp.square(vs[None] - mean_m), axis=axes)
    # rank counts only dims of size > 1 (unlike the factored test, QUIRK 8).
    rank = int(sum(d > 1 for d in p.shape))
    one_hot = jnp.asarray(np.eye(6, dtype=np.float32)[min(rank, 5), :5])  # zeros for rank >= 5
    frac = jnp.tanh((fraction - TIMESCALES) * 10.0)
    # Alphabetical by the reference's names: fraction_left, loss_features,
    # mean_rms, rank, var_m, var_rms.
    return jnp.concatenate(
        [frac, loss_feat, _clip_log_abs(mean_v)[None], one_hot,
         _clip_log_abs(var_m), _clip_log_abs(var_v)]
    )


def lstm_step(rnn, X, hidden, cell):
    """Per-tensor LSTM over the batch of n tensors: (controls (n,K), lr_mult (n,), h, c)."""
    # QUIRK (2) dead layer: the reference also evaluates relu(X·W[linear] + b)
    # and overwrites the result; rnn_params/linear is never used here.
    def linear(name, x):
        return x @ rnn[name]["w"] + rnn[name]["b"][None, :]

    mix = jax.nn.relu(linear("linear_1", X))
    # The max-pool over tensors is the only coupling between tensors (QUIRK 12).
    z = linear("linear_2", X) + jnp.max(mix, axis=0, keepdims=True)
    gates = linear("rnn/linear", jnp.concatenate([z, hidden], axis=-1))
    i, g, f, o = jnp.split(gates, 4, axis=-1)  # Haiku order i, g, f, o
    cell = jax.nn.sigmoid(f + 1.0) * cell + jax.nn.sigmoid(i) * jnp.tanh(g)  # forget bias +1
    hidden = jax.nn.sigmoid(o) * jnp.tanh(cell)
    controls = linear("rnn_to_controls", hidden)
    # QUIRK (4): the per-tensor learning rate is a raw linear head (can be <= 0).
    lr_mult = linear("step_size", hidden)[:, 0]
    return controls, lr_mult, hidden, cell


def mix_mlp_weights(ff: dict, controls_t) -> dict:
    """W_t = 100 · mean_k(W[k] · Cn[t,k]) for every per-parameter MLP weight."""
    K = controls_t.shape[0]
    return {name: MIX_SCALE * (jnp.tensordot(controls_t, w, axes=1) / K) for name, w in ff.items()}


# --------------------------------------------------------------------------- accumulators


def _decay(values, ndim):
    return jnp.asarray(values.reshape((-1,) + (1,) * ndim))


class TensorAccum(NamedTuple):
    """Per-tensor accumulators, decay axis first."""

    mom: jax.Array  # (3,)+S
    rms: jax.Array  # S
    row: jax.Array  # (3,)+S without d0, or (3, 0)
    col: jax.Array  # (3,)+S without d1, or (3, 0)
    diag: jax.Array  # (3,)+S for rank <= 1, or (3, 0)


def init_accum(shape) -> TensorAccum:
    shape = tuple(shape)
    dims = factored_dims(shape)
    empty = jnp.zeros((3, 0), F32)
    if dims is None:
        row, col, diag = empty, empty, jnp.zeros((3,) + shape, F32)
    else:
        d1, d0 = dims
        row = jnp.zeros((3,) + tuple(s for i, s in enumerate(shape) if i != d0), F32)
        col = jnp.zeros((3,) + tuple(s for i, s in enumerate(shape) if i != d1), F32)
        diag = empty
    return TensorAccum(jnp.zeros((3,) + shape, F32), jnp.zeros(shape, F32), row, col, diag)


def update_accum(acc: TensorAccum, g) -> tuple[TensorAccum, jax.Array, jax.Array]:
    """New accumulators and the factored factors (ρ·κ broadcast, or D^-½ for rank <= 1).

    Returns (acc, fac_rsqrt, fac_pow) where fac_rsqrt multiplies ĝ into the
    factored-normalised gradient F (group 7) and fac_pow multiplies m into
    group 13; both are (3,)+S (or broadcastable to it).
    """
    nd = g.ndim
    bm = _decay(MOM_DECAYS, nd)
    bf = _decay(FAC_DECAYS, nd - 1) if factored_dims(g.shape) else _decay(FAC_DECAYS, nd)
    mom = bm * acc.mom + (1.0 - bm) * g[None]  # no bias correction (QUIRK 13)
    rms = RMS_DECAY * acc.rms + (np.float32(1.0) - RMS_DECAY) * (g * g)
    q = g * g + FAC_EPS
    dims = factored_dims(g.shape)
    if dims is None:
        diag = bf * acc.diag + (1.0 - bf) * q[None]
        f_rsqrt = lax.rsqrt(jnp.maximum(diag + 1e-9, 1e-9))
        # QUIRK (9): group 13 uses D^(-1/2) as a float pow with no epsilon.
        f_pow = jnp.power(diag, -0.5)
        return TensorAccum(mom, rms, acc.row, acc.col, diag), f_rsqrt, f_pow
    d1, d0 = dims
    row = bf * acc.row + (1.0 - bf) * jnp.mean(q, axis=d0)[None]
    col = bf * acc.col + (1.0 - bf) * jnp.mean(q, axis=d1)[None]
    rd1 = d1 - 1 if d1 > d0 else d1  # position of axis d1 inside R
    row_mean = jnp.mean(row, axis=1 + rd1, keepdims=True)
    rho = lax.rsqrt(jnp.maximum(row / (row_mean + 1e-9), 1e-9))
    kappa = lax.rsqrt(jnp.maximum(col, 1e-9))
    fac = jnp.expand_dims(rho, 1 + d0) * jnp.expand_dims(kappa, 1 + d1)
    return TensorAccum(mom, rms, row, col, acc.diag), fac, fac


# --------------------------------------------------------------------------- per-parameter MLP


def mlp_groups(p, g, acc: TensorAccum, f_rsqrt, f_pow) -> list[jax.Array]:
    """The 14 un-normalised input groups, each (c_i,)+S (S already rank >= 1)."""
    m, v = acc.mom, acc.rms
    z = lax.rsqrt(v + 1e-6)
    dims = factored_dims(p.shape)
    if dims is None:
        rowb = colb = acc.diag  # QUIRK (9): rank <= 1 feeds D twice (groups 9 = 10, 11 = 12)
    else:
        d1, d0 = dims
        rowb = jnp.broadcast_to(jnp.expand_dims(acc.row, 1 + d0), m.shape)
        colb = jnp.broadcast_to(jnp.expand_dims(acc.col, 1 + d1), m.shape)
    return [
        g[None], jnp.clip(g, -0.1, 0.1)[None], p[None], m, v[None], m * z[None], z[None],
        g[None] * f_rsqrt, (g * z)[None], rowb, colb,
        lax.rsqrt(rowb + 1e-8), lax.rsqrt(colb + 1e-8), m * f_pow,
    ]


def mlp_step(w: dict, lr_mult, p, groups) -> tuple[jax.Array, dict]:
    """The signed step for one tensor (shape of p, rank >= 1) and intermediates.

    Each group is normalised over all elements per channel; the per-channel
    scale is folded into the first-layer weights: x̃_i·w0_i = x_i·(s_i ⊙ w0_i).
    """
    axes = tuple(range(1, p.ndim + 1))
    a1 = None
    for i, x in enumerate(groups):
        scale = lax.rsqrt(1e-5 + jnp.mean(jnp.square(x), axis=axes))  # (c_i,)
        wi = w[f"w0__{i}"] * scale[:, None]  # (c_i, 4)
        term = jnp.tensordot(wi, x, axes=((0,), (0,)))  # (4,)+S
        a1 = term if a1 is None else a1 + term
    bshape = (-1,) + (1,) * p.ndim
    a1 = jax.nn.relu(a1 + w["b0"].reshape(bshape))
    a2 = jax.nn.relu(jnp.tensordot(w["w1"], a1, axes=((0,), (0,))) + w["b1"].reshape(bshape))
    o = jnp.tensordot(w["w2"][:, :2], a2, axes=((0,), (0,))) + w["b2"][:2].reshape(bshape)
    direction, exp_arg = o[0], o[1] * EXP_MULT  # output channel 2 is unused (QUIRK 14)
    # QUIRK (11): the step is proportional to the tensor's RMS (+1e-9, not max).
    scale = jnp.sqrt(jnp.mean(jnp.square(p)) + 1e-9)
    # QUIRK (15): the magnitude acts only through exp(0.001·μ).
    step = lr_mult * ((direction * (scale * jnp.exp(exp_arg))) * STEP_MULT)
    return step, {"exp_arg": exp_arg}
