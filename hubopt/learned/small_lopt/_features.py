r"""Per-parameter feature accumulators for learned optimizers.

Small pure helpers, one tensor at a time, that `MLPLOpt` (and any other
per-parameter learned optimizer) builds its inputs from:

    momenta      m_k ← β_k m_k + (1 − β_k) g          for K decays at once (vmapped)
    factored     r   ← β_v r + (1 − β_v) mean_cols(g²)     (Adafactor, ndim ≥ 2)
                 c   ← β_v c + (1 − β_v) mean_rows(g²)
                 v̂_fac = r ⊗ c / mean(r)

Bias correction divides an EMA of decay β after t updates by 1 − β^t.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


def ema_update(acc_K: jax.Array, x: jax.Array, decays: jax.Array) -> jax.Array:
    """acc_k ← β_k acc_k + (1 − β_k) x, for every decay β_k at once."""
    x = x.astype(jnp.float32)
    return jax.vmap(lambda a, b: b * a + (1.0 - b) * x)(acc_K, decays)


def bias_correction(decay, count) -> jax.Array:
    """1 − β^t in float32 (t ≥ 1); divide an EMA by it to debias it."""
    return 1.0 - jnp.asarray(decay, jnp.float32) ** jnp.asarray(count, jnp.float32)


class Factored(NamedTuple):
    """Adafactor-style second moment of one tensor: row and column means of g².

    For tensors with fewer than 2 dims `row` is the full (unfactored) EMA of g²
    and `col` is an empty placeholder.
    """

    row: jax.Array
    col: jax.Array


def factored_init(p: jax.Array) -> Factored:
    if p.ndim < 2:
        return Factored(jnp.zeros(p.shape, jnp.float32), jnp.zeros((0,), jnp.float32))
    return Factored(
        jnp.zeros(p.shape[:-1], jnp.float32),
        jnp.zeros(p.shape[:-2] + p.shape[-1:], jnp.float32),
    )


def factored_update(f: Factored, g: jax.Array, decay: float) -> Factored:
    g2 = jnp.square(g.astype(jnp.float32))
    if g.ndim < 2:
        return Factored(decay * f.row + (1.0 - decay) * g2, f.col)
    return Factored(
        decay * f.row + (1.0 - decay) * jnp.mean(g2, axis=-1),
        decay * f.col + (1.0 - decay) * jnp.mean(g2, axis=-2),
    )


def factored_second_moment(f: Factored, ndim: int) -> jax.Array:
    """v̂ ≈ r ⊗ c / mean(r) with the tensor's shape (the EMA itself below 2 dims)."""
    if ndim < 2:
        return f.row
    row_mean = jnp.mean(f.row, axis=-1, keepdims=True)
    r = f.row / jnp.maximum(row_mean, 1e-30)
    return r[..., :, None] * f.col[..., None, :]
