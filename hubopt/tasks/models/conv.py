"""The lane-keeping tasks' convolutional feature extractor, and the models built on it.

A PilotNet-style stack (Bojarski et al. 2016, the family of the HUB paper's
Table 6 CNN and of the ncps lane-keeping examples), scaled to the frame
size: 'same'-padded convolutions with ReLU,

    5×5 stride 2 → 5×5 stride 2 → 3×3 stride 2 → 3×3 stride 1 → flatten → dense(features), ReLU

with `channels` filters per convolution. It runs on every frame of a
sequence (frames folded into the batch); a recurrent head (an LSTM, or an
NCP-wired LTC) turns the per-frame features into a steering angle per step.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

KERNELS = ((5, 2), (5, 2), (3, 2), (3, 1))  # (kernel size, stride) of each convolution


class FrameFeatures(nn.Module):
    """Frames (N, H, W, C) in [0, 1] -> features (N, features)."""

    channels: tuple[int, ...] = (24, 36, 48, 64)
    features: int = 32

    @nn.compact
    def __call__(self, frames_NHWC: jax.Array) -> jax.Array:
        if len(self.channels) != len(KERNELS):
            raise ValueError(f"channels needs {len(KERNELS)} entries, got {self.channels}")
        h = frames_NHWC
        for i, (c, (k, s)) in enumerate(zip(self.channels, KERNELS, strict=True)):
            h = nn.relu(nn.Conv(c, (k, k), strides=(s, s), padding="SAME", name=f"conv{i}")(h))
        h = h.reshape(h.shape[0], -1)
        return nn.relu(nn.Dense(self.features, name="dense")(h))


class SequenceOverFrames(nn.Module):
    """Frame sequences (B, T, H, W, C) -> per-step predictions (B, T, out):
    `FrameFeatures` on every frame, then `head` over the feature sequence."""

    head: nn.Module
    channels: tuple[int, ...] = (24, 36, 48, 64)
    features: int = 32

    @nn.compact
    def __call__(self, frames_BTHWC: jax.Array) -> jax.Array:
        b, t = frames_BTHWC.shape[:2]
        feats = FrameFeatures(self.channels, self.features, name="cnn")(
            frames_BTHWC.reshape(b * t, *frames_BTHWC.shape[2:])
        )
        return self.head(feats.reshape(b, t, self.features))


def frames_to_unit_range(frames_uint8: jax.Array) -> jax.Array:
    """uint8 pixels -> float32 in [0, 1]."""
    return frames_uint8.astype(jnp.float32) * (1.0 / 255.0)


def sequence_over_frames(
    head: nn.Module, channels: tuple[int, ...], features: int
) -> tuple[Callable, Callable]:
    """`(init, apply)` of a `SequenceOverFrames`: `init(key, x_example) -> params`."""
    module = SequenceOverFrames(head=head, channels=tuple(channels), features=features)

    def init(key, x_example):
        return module.init(key, x_example)["params"]

    def apply(params, frames_BTHWC):
        return module.apply({"params": params}, frames_BTHWC)

    return init, apply
