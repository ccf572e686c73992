"""A bottleneck ResNet (He et al. 2016, ResNet-50's layout) for small images, params only.

    stem     3×3 conv (stride `stem_stride`, 1 for ResNet-50's layout; no max-pool),
             GroupNorm, ReLU
    stage s  `blocks[s]` bottleneck blocks of width w_s (the first of stage s > 0
             strides by 2 in its 3×3 conv, "ResNet v1.5"):
                 1×1 conv w_s → GN → ReLU → 3×3 conv w_s → GN → ReLU
                 → 1×1 conv 4·w_s → GN,   plus the shortcut, then ReLU
             the shortcut is the identity, or a 1×1 conv (strided like the block)
             + GN where the channels or the resolution change
    head     global average pool → dense(num_classes)

With `blocks = (3, 4, 6, 3)` and `widths = (64, 128, 256, 512)` this is
ResNet-50's layout (expansion 4: stage outputs 256, 512, 1024, 2048 channels);
the stem is the CIFAR-style 3×3 convolution that 28- and 32-pixel images need
(ImageNet's 7×7 stride-2 stem and max-pool would leave a 7×7 image to the
first stage).

Normalisation: GroupNorm (Wu & He 2018), not the paper's BatchNorm. The task
contract is parameters-only (no mutable state travels through an optimizer
step), and BatchNorm needs running batch statistics. GroupNorm normalises each
image over groups of channels (`groups_for`: 32 groups, fewer for narrow
layers), so: no batch statistics, training and evaluation compute the same
function, and the result does not depend on the batch size (small batches
are fine). Its cost against BatchNorm: somewhat lower accuracy at large
batches (Wu & He report ~0.5% on ImageNet for ResNet-50) and a little more
computation per layer. The last GroupNorm of every block starts with a zero
scale ("zero-init residual", Goyal et al. 2017), so every block starts as the
identity: this is what makes a deep normalised ResNet train from the start
without BatchNorm's statistics.

Convolutions are im2col + matmul (`conv2d`, over `conv.patches`): XLA's CPU
convolution whose kernel is a loop-carried value of `lax.scan` (the runner's
training loop) runs about 10× slower (`hubopt.tasks.models.conv`). A 1×1
convolution is a matmul of the (strided) pixels; a test checks every path
against `lax.conv_general_dilated`.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from hubopt.tasks.models.conv import patches

EXPANSION = 4
MAX_GROUPS = 32
RESNET50_BLOCKS = (3, 4, 6, 3)
RESNET50_WIDTHS = (64, 128, 256, 512)

he_normal = nn.initializers.variance_scaling(2.0, "fan_in", "truncated_normal")


def groups_for(channels: int, max_groups: int = MAX_GROUPS) -> int:
    """The GroupNorm groups of a layer: the largest divisor of `channels` <= `max_groups`."""
    return max(g for g in range(1, min(channels, max_groups) + 1) if channels % g == 0)


def conv2d(x_NHWC: jax.Array, kernel: jax.Array, size: int, stride: int) -> jax.Array:
    """'SAME' convolution of x with a `(size·size·C_in, C_out)` kernel (a flattened HWIO
    kernel), as im2col + matmul."""
    if size == 1:
        taps = x_NHWC[:, ::stride, ::stride, :] if stride > 1 else x_NHWC
    else:
        taps = patches(x_NHWC, size, stride)
    return taps @ kernel


class Conv(nn.Module):
    """A bias-free 'SAME' convolution, im2col + matmul; its `kernel` is `(k·k·C_in, C_out)`."""

    features: int
    size: int = 3
    stride: int = 1

    @nn.compact
    def __call__(self, x_NHWC: jax.Array) -> jax.Array:
        fan_in = self.size * self.size * x_NHWC.shape[-1]
        kernel = self.param("kernel", he_normal, (fan_in, self.features), jnp.float32)
        return conv2d(x_NHWC, kernel, self.size, self.stride)


def group_norm(channels: int, zero_scale: bool = False, name: str | None = None) -> nn.GroupNorm:
    return nn.GroupNorm(
        num_groups=groups_for(channels),
        epsilon=1e-5,
        scale_init=nn.initializers.zeros if zero_scale else nn.initializers.ones,
        name=name,
    )


class Bottleneck(nn.Module):
    """1×1 (width) → 3×3 (width, strided) → 1×1 (4·width), GroupNorm after each, + shortcut."""

    width: int
    stride: int = 1

    @nn.compact
    def __call__(self, x_NHWC: jax.Array) -> jax.Array:
        out = EXPANSION * self.width
        h = nn.relu(group_norm(self.width, name="norm1")(Conv(self.width, 1, name="conv1")(x_NHWC)))
        h = Conv(self.width, 3, self.stride, name="conv2")(h)
        h = nn.relu(group_norm(self.width, name="norm2")(h))
        h = group_norm(out, zero_scale=True, name="norm3")(Conv(out, 1, name="conv3")(h))
        shortcut = x_NHWC
        if self.stride != 1 or x_NHWC.shape[-1] != out:
            shortcut = Conv(out, 1, self.stride, name="proj")(x_NHWC)
            shortcut = group_norm(out, name="proj_norm")(shortcut)
        return nn.relu(h + shortcut)


class ResNet(nn.Module):
    """Images (N, H, W, C), normalised pixels -> logits (N, num_classes).

    Parameters are named `stem`, `stem_norm`, `stage{s}_block{b}` (each a
    `Bottleneck`: conv1..conv3, norm1..norm3, and proj/proj_norm where the
    shortcut needs them) and `head`.
    """

    num_classes: int
    blocks: Sequence[int] = RESNET50_BLOCKS
    widths: Sequence[int] = RESNET50_WIDTHS
    stem_width: int = 64
    stem_stride: int = 1

    @nn.compact
    def __call__(self, x_NHWC: jax.Array) -> jax.Array:
        if len(self.blocks) != len(self.widths) or not self.blocks:
            raise ValueError(
                f"blocks {tuple(self.blocks)} and widths {tuple(self.widths)} must be "
                "non-empty and of one length"
            )
        h = Conv(self.stem_width, 3, self.stem_stride, name="stem")(x_NHWC)
        h = nn.relu(group_norm(self.stem_width, name="stem_norm")(h))
        for s, (num_blocks, width) in enumerate(zip(self.blocks, self.widths, strict=True)):
            for b in range(num_blocks):
                stride = 2 if s > 0 and b == 0 else 1
                h = Bottleneck(width, stride, name=f"stage{s}_block{b}")(h)
        h = jnp.mean(h, axis=(1, 2))
        return nn.Dense(self.num_classes, name="head")(h)
