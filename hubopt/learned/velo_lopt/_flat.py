r"""VeLO's per-tensor LSTM inputs and per-parameter MLP on all tensors at once.

The math is `_math`'s (VELO_SPEC §4.3, §4.7–4.8); only the layout differs. Written
tensor by tensor, VeLO makes XLA emit about 110–130 fused kernels per tensor (each
per-tensor mean, each MLP input group), and on CPU every kernel is compiled on its own:
compile time grows with the number of tensors. Here the tensors lie end to end in one
`FlatLayout`, so that

* the per-tensor means (the LSTM's 11 statistics, the MLP's 18 input normalisers, the
  tensor's RMS) are row sums plus one segment sum over the blocks, and
* the 30 → 4 → 4 → 3 MLP is one elementwise program over all entries, with each
  tensor's mixed weights W_t (and ℓ_t, its RMS) looked up per block of 128 entries.

What stays per tensor is what depends on a tensor's axes: the factored accumulators
R and C (means along d0 and d1), the factor ρ_a ⊗ κ_a, and the contribution of the
input groups 9–12 (R, C and their rsqrt, computed on R's and C's shapes and broadcast),
or, for a tensor of rank <= 1, the same groups from its diagonal accumulator D. Those
are computed in each tensor's shape and laid into joined buffers, which XLA writes out
every step, as it does the joined g, p, momenta and v: joining a large tensor costs
step time, so `velo`'s default layout ("auto", `transform.FLAT_MAX_SIZE`) joins only the
small ones. The MLP sits behind a conditional, so that XLA compiles it once instead of
copying it into every tensor's slice of the joined step.

Padding entries (zeros in every joined buffer) are kept out of every sum: every channel
is zero there except rsqrt(v + 1e-6)² and the centred momenta, which are masked.
Sums run in another order than the per-tensor form: results agree with it (and with
the reference's golden data) to float32 rounding, within VELO_SPEC §7's tolerances.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from hubopt._src.flat_layout import FlatLayout
from hubopt.learned.velo_lopt import _math as vm

# The 18 per-entry input channels (group, momentum) whose normalisers are per-tensor means
# over the tensor's entries, in the reference's order of addition (groups ascending).
CHANNELS = tuple(
    sorted(
        [(0, 0), (1, 0), (2, 0), (4, 0), (6, 0), (8, 0)]
        + [(g, a) for g in (3, 5, 7, 13) for a in range(3)]
    )
)


def layout_of(params) -> FlatLayout:
    """The `FlatLayout` of `params`' leaves (a scalar is one entry)."""
    return FlatLayout.of([np.shape(p) for p in jax.tree_util.tree_leaves(params)])


def _rank_one_hot(shapes) -> np.ndarray:
    """(n, 5): the one-hot rank of each tensor, counting only axes of size > 1 (zeros for
    rank >= 5), as `_math.lstm_features`."""
    eye = np.eye(6, dtype=np.float32)
    return np.stack([eye[min(sum(d > 1 for d in s), 5), :5] for s in shapes])


def lstm_inputs(layout: FlatLayout, p, mom, v, fraction, loss_feat) -> jax.Array:
    """The (n, 30) LSTM inputs of `_math.lstm_features` for every tensor at once.

    `p`, `v`: joined (num_blocks, BLOCK) buffers of the OLD parameters and second moment;
    `mom`: the three OLD momenta, joined each.
    """
    valid = layout.valid()
    mu_m = layout.tensor_sums(list(mom)) / layout.sizes()[None, :]  # (3, n)
    mu_e = [layout.per_entry(mu) for mu in mu_m]  # (nb, 1) each
    centred = [jnp.where(valid, jnp.square(m - mu), 0.0) for m, mu in zip(mom, mu_e, strict=True)]
    centred_v = [jnp.where(valid, jnp.square(v - mu), 0.0) for mu in mu_e]  # QUIRK (1)
    sums = layout.tensor_sums([jnp.square(p), v, *centred, *centred_v]) / layout.sizes()[None, :]
    mean_p2, mean_v, var_m, var_v = sums[0], sums[1], sums[2:5], sums[5:8]
    s = lax.rsqrt(jnp.maximum(1e-9, mean_p2))  # (n,)
    n = layout.num_tensors
    frac = jnp.tanh((fraction - vm.TIMESCALES) * 10.0)
    return jnp.concatenate(
        [
            jnp.broadcast_to(frac, (n, frac.shape[0])),
            jnp.broadcast_to(loss_feat, (n, loss_feat.shape[0])),
            vm._clip_log_abs(mean_v * s)[:, None],
            jnp.asarray(_rank_one_hot(layout.shapes)),
            vm._clip_log_abs(var_m * (s * s)[None, :]).T,
            vm._clip_log_abs(var_v * (s * s)[None, :]).T,
        ],
        axis=1,
    )


def _structure(w: dict, acc: vm.TensorAccum, shape) -> tuple[list, list, jax.Array]:
    """One tensor's axis-dependent MLP inputs, each in the tensor's shape S:
    (the 3 factors of group 7's ĝ, the 3 of group 13's m, the (4,)+S first-layer
    contribution of groups 9–12). `w`: the tensor's mixed MLP weights."""
    dims = vm.factored_dims(shape)
    if dims is not None:
        d1, d0 = dims
        rho, kappa = vm.factored_factors(acc.row, acc.col, dims)
        fac = [jnp.expand_dims(rho[a], d0) * jnp.expand_dims(kappa[a], d1) for a in range(3)]
        t_row = jnp.expand_dims(vm.struct_term(w, acc.row, 9, 11), 1 + d0)
        t_col = jnp.expand_dims(vm.struct_term(w, acc.col, 10, 12), 1 + d1)
        return fac, fac, jnp.broadcast_to(t_row + t_col, (4, *shape))
    # rank <= 1: D stands in for R and C (QUIRK 9); a scalar is one entry (QUIRK 10)
    diag = acc.diag.reshape((3, *shape, 1) if len(shape) == 0 else (3, *shape))
    f_rsqrt, f_pow = vm.diag_factors(diag)
    term = vm.struct_term(w, diag, 9, 11) + vm.struct_term(w, diag, 10, 12)
    return (
        [f.reshape(shape) for f in f_rsqrt],
        [f.reshape(shape) for f in f_pow],
        term.reshape((4, *shape)),
    )


def _per_block(layout: FlatLayout, per_tensor: jax.Array) -> jax.Array:
    """(n, k) per-tensor values → (num_blocks, k), each block's tensor's row."""
    return jnp.take(per_tensor, jnp.asarray(layout.block_owner), axis=0)


def mlp_steps(layout: FlatLayout, mixed: dict, lr_mult, p, g, accs) -> tuple[list, list]:
    """The signed steps (and exp arguments) of `_math.mlp_step_factored` / `mlp_step` for
    every tensor, each in its tensor's shape.

    `mixed`: the mixed MLP weights (a leading tensor axis); `p`, `g`: the tensors
    (float32, g clipped); `accs`: their UPDATED accumulators.
    """
    n = layout.num_tensors
    f7, f13, struct = [], [], []
    for t, (x, acc) in enumerate(zip(p, accs, strict=True)):
        w_t = {name: mixed[name][t] for name in ("w0__9", "w0__10", "w0__11", "w0__12")}
        a, b, c = _structure(w_t, acc, x.shape)
        f7.append(a)
        f13.append(b)
        struct.append(c)

    def joined(xs):
        return layout.flatten(xs)

    g_f, p_f = joined(g), joined(p)
    m_f = [joined([acc.mom[a] for acc in accs]) for a in range(3)]
    v_f = joined([acc.rms for acc in accs])
    fac7 = [joined([f[a] for f in f7]) for a in range(3)]
    fac13 = [joined([f[a] for f in f13]) for a in range(3)]
    t_f = [joined([s[j] for s in struct]) for j in range(4)]

    # Normalisers s_c = rsqrt(1e-5 + mean(x_c²)) of the 18 per-entry channels, and the
    # tensor's mean square (its RMS scales the step, QUIRK 11).
    g2, inv_v = jnp.square(g_f), 1.0 / (v_f + 1e-6)  # z² = 1/(v + 1e-6)
    squares = {
        (0, 0): g2,
        (1, 0): jnp.minimum(g2, 0.01),
        (2, 0): jnp.square(p_f),
        (4, 0): jnp.square(v_f),
        (6, 0): jnp.where(layout.valid(), inv_v, 0.0),  # 1e6 at the padding
        (8, 0): g2 * inv_v,
    }
    for a in range(3):
        squares[(3, a)] = jnp.square(m_f[a])
        squares[(5, a)] = jnp.square(m_f[a]) * inv_v
        squares[(7, a)] = jnp.square(g_f * fac7[a])
        squares[(13, a)] = jnp.square(m_f[a] * fac13[a])
    means = layout.tensor_sums([squares[k] for k in CHANNELS]) / layout.sizes()[None, :]  # (18, n)
    w0 = jnp.stack([mixed[f"w0__{i}"][:, c] for i, c in CHANNELS], axis=1)  # (n, 18, 4)
    folded = lax.rsqrt(1e-5 + means.T)[:, :, None] * w0
    rms = jnp.sqrt(means[CHANNELS.index((2, 0))] + 1e-9)  # sqrt(mean(p²) + 1e-9)

    # every per-tensor number the MLP needs, one row per block
    per_tensor = jnp.concatenate(
        [
            folded.reshape(n, -1),  # 72: channel c, output j at 4c + j
            mixed["b0"],
            mixed["w1"].reshape(n, 16),
            mixed["b1"],
            mixed["w2"][:, :, :2].reshape(n, 8),  # output channel 2 is unused (QUIRK 14)
            mixed["b2"][:, :2],
            lr_mult[:, None],
            rms[:, None],
        ],
        axis=1,
    )
    rows = _per_block(layout, per_tensor)
    # The MLP behind a conditional: XLA copies cheap elementwise producers into each of
    # their consumers, and the step's consumers are the tensors' slices of it, so without
    # the boundary every joined tensor gets its own copy of the whole MLP kernel (what
    # the layout is there to avoid). The other branch is taken only for a non-finite ℓ,
    # which the LSTM's max-pool over tensors spreads to every tensor anyway: NaN steps.
    step, exp_arg = jax.lax.cond(
        jnp.all(jnp.isfinite(lr_mult)),
        lambda: _mlp(rows, g_f, p_f, m_f, v_f, fac7, fac13, t_f),
        lambda: (jnp.full_like(g_f, jnp.nan), jnp.full_like(g_f, jnp.nan)),
    )
    return layout.unflatten(step), layout.unflatten(exp_arg)


def _mlp(rows, g_f, p_f, m_f, v_f, fac7, fac13, t_f):
    """The 30 → 4 → 4 → 3 MLP and the step on joined buffers; `rows`: each block's
    tensor's folded first-layer weights (72), b0 (4), w1 (16), b1 (4), w2 (8), b2 (2),
    ℓ and RMS."""
    col = iter(range(rows.shape[1]))

    def take(k):
        return [rows[:, next(col)][:, None] for _ in range(k)]

    wf, b0, w1, b1, w2, b2 = take(72), take(4), take(16), take(4), take(8), take(2)
    (lr_e,), (rms_e,) = take(1), take(1)

    z = lax.rsqrt(v_f + 1e-6)
    chans = {(0, 0): g_f, (1, 0): jnp.clip(g_f, -0.1, 0.1), (2, 0): p_f}
    chans.update({(4, 0): v_f, (6, 0): z, (8, 0): g_f * z})
    for a in range(3):
        chans[(3, a)] = m_f[a]
        chans[(5, a)] = m_f[a] * z
        chans[(7, a)] = g_f * fac7[a]
        chans[(13, a)] = m_f[a] * fac13[a]
    bias0 = [b0[j] + t_f[j] for j in range(4)]
    a1 = [jax.nn.relu(h) for h in _dense([chans[k] for k in CHANNELS], wf, bias0)]
    a2 = [jax.nn.relu(h) for h in _dense(a1, w1, b1)]
    out = _dense(a2, w2, b2)  # output channel 2 is unused (QUIRK 14)
    direction, exp_arg = out[0], out[1] * vm.EXP_MULT
    # QUIRK (15): the magnitude acts only through exp(0.001·μ)
    step = lr_e * ((direction * (rms_e * jnp.exp(exp_arg))) * vm.STEP_MULT)
    return step, exp_arg


def _dense(xs, w, b) -> list:
    """h_o = b_o + Σ_i x_i·w[i·n + o] (n = len(b) outputs), added in the reference's order."""
    n = len(b)
    out = []
    for o in range(n):
        h = b[o] + xs[0] * w[o]
        for i in range(1, len(xs)):
            h = h + xs[i] * w[n * i + o]
        out.append(h)
    return out
