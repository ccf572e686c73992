"""A Vision Transformer (Dosovitskiy et al. 2021) for small images, params only.

    patches   the image cut into non-overlapping p×p patches, each flattened and
              mapped by one dense layer to `width` (a p×p stride-p convolution)
    tokens    a learned class token, then the patches; plus a learned position
              embedding (one vector per token, initialised N(0, 0.02²))
    blocks    `depth` pre-LN transformer blocks:
                  x ← x + MHSA(LN(x))           `heads` heads of width/heads
                  x ← x + MLP(LN(x))            dense(mlp_ratio·width), GELU, dense(width)
    head      LN, then the class token's output → dense(num_classes)

The class token (not mean pooling) reads out the image, as in ViT and DeiT.
The HUB paper's ViT for 28-pixel images is depth 9, width 192, 12 heads,
patch 4 (49 patches + the class token); the MLP ratio is ViT's 4. There is no
dropout or stochastic depth: the task contract is parameters-only and
deterministic (the paper's regulariser here is CutMix, applied to the data).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

MLP_RATIO = 4


def to_patches(x_NHWC: jax.Array, patch: int) -> jax.Array:
    """(N, H, W, C) -> (N, (H/p)·(W/p), p·p·C): row-major patches, each (row, column,
    channel) flattened."""
    n, h, w, c = x_NHWC.shape
    if h % patch or w % patch:
        raise ValueError(f"image {h}×{w} is not a whole number of {patch}×{patch} patches")
    x = x_NHWC.reshape(n, h // patch, patch, w // patch, patch, c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(n, (h // patch) * (w // patch), patch * patch * c)


class EncoderBlock(nn.Module):
    """A pre-LN transformer block: attention then MLP, each residual."""

    width: int
    heads: int
    mlp_ratio: int = MLP_RATIO

    @nn.compact
    def __call__(self, x_NTD: jax.Array) -> jax.Array:
        h = nn.LayerNorm(epsilon=1e-6, name="norm1")(x_NTD)
        h = nn.MultiHeadDotProductAttention(
            num_heads=self.heads, qkv_features=self.width, deterministic=True, name="attention"
        )(h, h)
        x_NTD = x_NTD + h
        h = nn.LayerNorm(epsilon=1e-6, name="norm2")(x_NTD)
        h = nn.gelu(nn.Dense(self.mlp_ratio * self.width, name="mlp1")(h))
        return x_NTD + nn.Dense(self.width, name="mlp2")(h)


class ViT(nn.Module):
    """Images (N, H, W, C), normalised pixels -> logits (N, num_classes).

    Parameters are named `embed`, `cls`, `position`, `block{i}` (each an
    `EncoderBlock`: norm1, attention, norm2, mlp1, mlp2), `norm` and `head`.
    """

    num_classes: int
    depth: int = 9
    width: int = 192
    heads: int = 12
    patch: int = 4
    mlp_ratio: int = MLP_RATIO

    @nn.compact
    def __call__(self, x_NHWC: jax.Array) -> jax.Array:
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not a multiple of heads {self.heads}")
        tokens = nn.Dense(self.width, name="embed")(to_patches(x_NHWC, self.patch))
        n, t, _ = tokens.shape
        cls = self.param("cls", nn.initializers.zeros, (1, 1, self.width), jnp.float32)
        h = jnp.concatenate([jnp.broadcast_to(cls, (n, 1, self.width)), tokens], axis=1)
        position = self.param(
            "position", nn.initializers.normal(0.02), (1, t + 1, self.width), jnp.float32
        )
        h = h + position
        for i in range(self.depth):
            h = EncoderBlock(self.width, self.heads, self.mlp_ratio, name=f"block{i}")(h)
        h = nn.LayerNorm(epsilon=1e-6, name="norm")(h[:, 0])
        return nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros, name="head")(h)
