"""The lane-keeping tasks' convolutional feature extractor, and the models built on it.

A PilotNet-style stack (Bojarski et al. 2016, the family of the HUB paper's
Table 6 CNN and of the ncps lane-keeping examples), scaled to the frame
size: 'same'-padded convolutions with ReLU,

    5×5 stride 2 → 5×5 stride 2 → 3×3 stride 2 → 3×3 stride 1 → flatten → dense(features), ReLU

with `channels` filters per convolution. It runs on every frame of a
sequence (frames folded into the batch); a recurrent head (an LSTM, or an
NCP-wired LTC) turns the per-frame features into a steering angle per step.

Each convolution is written as im2col + matmul: the k×k patches of the
'same'-padded input (`patches`), times a (k·k·C_in, C_out) kernel. It equals
`lax.conv_general_dilated` with 'SAME' padding (a test checks), and it is
what makes training fast on CPU: XLA's CPU convolution whose kernel is a
loop-carried value of a `lax.scan` (the runner's training loop) runs about
10× slower than the same step jitted alone, while the matmul form runs at
full speed in both (`benchmarks/conv_in_scan.py`: 409 ms against 34 ms a
training step on 256 32×32 frames).
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from hubopt.tasks.models import pure_functions

KERNELS = ((5, 2), (5, 2), (3, 2), (3, 1))  # (kernel size, stride) of each convolution


def patches(x_NHWC: jax.Array, kernel: int, stride: int) -> jax.Array:
    """The kernel×kernel patches of x with 'SAME' padding at `stride`:
    (N, ⌈H/s⌉, ⌈W/s⌉, kernel·kernel·C), ordered (row, column, channel) like a
    flattened HWIO kernel."""
    _, h, w, _ = x_NHWC.shape
    h_out, w_out = -(-h // stride), -(-w // stride)
    pad_h = max((h_out - 1) * stride + kernel - h, 0)
    pad_w = max((w_out - 1) * stride + kernel - w, 0)
    xp = jnp.pad(
        x_NHWC,
        ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)),
    )
    rows, cols = stride * (h_out - 1) + 1, stride * (w_out - 1) + 1
    taps = [
        xp[:, i : i + rows : stride, j : j + cols : stride, :]
        for i in range(kernel)
        for j in range(kernel)
    ]
    return jnp.concatenate(taps, axis=-1)


class FrameFeatures(nn.Module):
    """Frames (N, H, W, C), centred pixels -> features (N, features)."""

    channels: tuple[int, ...] = (24, 36, 48, 64)
    features: int = 32

    @nn.compact
    def __call__(self, frames_NHWC: jax.Array) -> jax.Array:
        if len(self.channels) != len(KERNELS):
            raise ValueError(f"channels needs {len(KERNELS)} entries, got {self.channels}")
        h = frames_NHWC
        for i, (c, (k, s)) in enumerate(zip(self.channels, KERNELS, strict=True)):
            h = nn.relu(nn.Dense(c, name=f"conv{i}")(patches(h, k, s)))
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


def frames_to_centred_range(frames_uint8: jax.Array) -> jax.Array:
    """uint8 pixels -> float32 in [−2, 2] (4·p/255 − 2: centred, about unit scale).

    Centring matters: with inputs in [0, 1] the CNN under the paper's Adam(0.01)
    collapsed to predicting the mean steering on `carracing_lstm` (cpu size, test
    r2 ≈ 0), and with these inputs it reached r2 ≈ 0.98 in the same run."""
    return frames_uint8.astype(jnp.float32) * (4.0 / 255.0) - 2.0


def sequence_over_frames(
    head: nn.Module, channels: tuple[int, ...], features: int
) -> tuple[Callable, Callable]:
    """`(init, apply)` of a `SequenceOverFrames`: `init(key, x_example) -> params`."""
    return pure_functions(
        SequenceOverFrames(head=head, channels=tuple(channels), features=features)
    )
