"""Image augmentation in pure JAX, for a task's `batch` (jittable, vmapped over the batch).

Every function takes a batch of images `(N, H, W, C)` (any dtype: the tasks
augment the stored uint8 pixels, before normalisation) and a key, and draws
independently for each image:

    random_crop(key, x, pad)   zero-pad by `pad` on each side, crop H×W at a uniform
                               offset in [0, 2·pad]² (a shift by −pad..pad)
    random_flip(key, x)        mirror left–right with probability 1/2
    cutmix(key, x, t)          CutMix (Yun et al. 2019): paste a box of a partner
                               image (a random permutation of the batch) and mix
                               the soft targets `t (N, K)` by the pasted area

CutMix's box follows the paper's recipe: λ ~ Beta(α, α), a box of
⌊H·√(1−λ)⌋ × ⌊W·√(1−λ)⌋ centred at a uniform pixel, clipped to the image; the
target weight of the partner is the area actually pasted (after clipping),
divided by H·W, so targets always match pixels.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["cutmix", "cutmix_boxes", "paste_boxes", "random_crop", "random_flip", "shift"]


def shift(x_HWC: jax.Array, offset: jax.Array, pad: int) -> jax.Array:
    """One image zero-padded by `pad` and cropped back to H×W at `offset = (row, col)` in
    [0, 2·pad]²: offset (pad, pad) is the identity."""
    h, w, c = x_HWC.shape
    padded = jnp.pad(x_HWC, ((pad, pad), (pad, pad), (0, 0)))
    zero = jnp.zeros((), offset.dtype)
    return jax.lax.dynamic_slice(padded, (offset[0], offset[1], zero), (h, w, c))


def random_crop(key: jax.Array, x_NHWC: jax.Array, pad: int) -> jax.Array:
    """Each image zero-padded by `pad` and cropped back at a uniform random offset."""
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    if pad == 0:
        return x_NHWC
    offsets = jax.random.randint(key, (x_NHWC.shape[0], 2), 0, 2 * pad + 1)
    return jax.vmap(lambda img, off: shift(img, off, pad))(x_NHWC, offsets)


def random_flip(key: jax.Array, x_NHWC: jax.Array) -> jax.Array:
    """Each image mirrored left–right (along W) with probability 1/2."""
    flip = jax.random.bernoulli(key, 0.5, (x_NHWC.shape[0], 1, 1, 1))
    return jnp.where(flip, x_NHWC[:, :, ::-1, :], x_NHWC)


def cutmix_boxes(key: jax.Array, n: int, h: int, w: int, alpha: float = 1.0) -> jax.Array:
    """CutMix boxes `(n, 4) int32` as (top, bottom, left, right), half-open, inside the
    image: λ ~ Beta(α, α), sides ⌊h·√(1−λ)⌋ and ⌊w·√(1−λ)⌋, centred at a uniform pixel."""
    k_lam, k_row, k_col = jax.random.split(key, 3)
    if alpha == 1.0:  # Beta(1, 1) is uniform; its sampler compiles in a fraction of Beta's
        lam = jax.random.uniform(k_lam, (n,))
    else:
        lam = jax.random.beta(k_lam, alpha, alpha, (n,))
    ratio = jnp.sqrt(1.0 - lam)
    cut_h = jnp.floor(h * ratio).astype(jnp.int32)
    cut_w = jnp.floor(w * ratio).astype(jnp.int32)
    cy = jax.random.randint(k_row, (n,), 0, h)
    cx = jax.random.randint(k_col, (n,), 0, w)
    top, bottom = jnp.clip(cy - cut_h // 2, 0, h), jnp.clip(cy + cut_h // 2, 0, h)
    left, right = jnp.clip(cx - cut_w // 2, 0, w), jnp.clip(cx + cut_w // 2, 0, w)
    return jnp.stack([top, bottom, left, right], axis=-1)


def paste_boxes(
    x_NHWC: jax.Array, partner_NHWC: jax.Array, boxes_Nx4: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """`x` with each image's box (top, bottom, left, right) replaced by the partner's
    pixels, and the pasted fraction of each image's area `(N,) float32`."""
    _, h, w, _ = x_NHWC.shape
    rows = jnp.arange(h)[None, :, None]
    cols = jnp.arange(w)[None, None, :]
    top, bottom, left, right = (boxes_Nx4[:, i, None, None] for i in range(4))
    inside = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)  # (N, H, W)
    mixed = jnp.where(inside[..., None], partner_NHWC, x_NHWC)
    area = jnp.mean(inside.astype(jnp.float32), axis=(1, 2))
    return mixed, area


def cutmix(
    key: jax.Array,
    x_NHWC: jax.Array,
    targets_NxK: jax.Array,
    *,
    alpha: float = 1.0,
    prob: float = 1.0,
) -> tuple[jax.Array, jax.Array]:
    """CutMix each image with probability `prob`, its partner drawn by a random
    permutation of the batch: `(images, targets)`, targets mixed as
    (1 − a)·t + a·t_partner with a the pasted area fraction (0 where not applied)."""
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"prob must lie in [0, 1], got {prob}")
    n, h, w, _ = x_NHWC.shape
    k_perm, k_box, k_apply = jax.random.split(key, 3)
    partner = jax.random.permutation(k_perm, n)
    boxes = cutmix_boxes(k_box, n, h, w, alpha)
    apply = jax.random.bernoulli(k_apply, prob, (n, 1))
    boxes = jnp.where(apply, boxes, 0)  # an empty box: nothing pasted
    mixed, area = paste_boxes(x_NHWC, x_NHWC[partner], boxes)
    a = area[:, None]
    return mixed, (1.0 - a) * targets_NxK + a * targets_NxK[partner]
