"""Why the lane-keeping CNN is im2col + matmul: one training step of it, inside a
`lax.scan` (as the runner trains) and jitted alone, for XLA's convolution and for
`hubopt.tasks.models.conv.patches` + matmul, on the same frames, side by side.

    python benchmarks/conv_in_scan.py
"""

from __future__ import annotations

import time

import flax.linen as nn
import jax
import jax.numpy as jnp

from hubopt.tasks.models.conv import KERNELS, FrameFeatures

CHANNELS = (12, 18, 24, 32)  # the "cpu" size's
STEPS = 10


class XlaConvFeatures(nn.Module):
    """The same stack with `nn.Conv` (XLA's convolution)."""

    @nn.compact
    def __call__(self, h):
        for c, (k, s) in zip(CHANNELS, KERNELS, strict=True):
            h = nn.relu(nn.Conv(c, (k, k), strides=(s, s), padding="SAME")(h))
        return nn.relu(nn.Dense(32)(h.reshape(h.shape[0], -1)))


def seconds_per_step(model, frames) -> tuple[float, float]:
    params = model.init(jax.random.key(0), frames)
    grad = jax.grad(lambda p, x: jnp.sum(model.apply(p, x)))

    def step(p, i):
        g = grad(p, frames + i)
        return jax.tree.map(lambda a, b: a - 1e-3 * b, p, g), None

    scanned = jax.jit(lambda p: jax.lax.scan(step, p, jnp.arange(STEPS, dtype=jnp.float32))[0])
    alone = jax.jit(step)
    jax.block_until_ready(scanned(params))
    jax.block_until_ready(alone(params, 0.0))
    t0 = time.perf_counter()
    jax.block_until_ready(scanned(params))
    in_scan = (time.perf_counter() - t0) / STEPS
    t0 = time.perf_counter()
    p = params
    for i in range(STEPS):
        p, _ = alone(p, float(i))
    jax.block_until_ready(p)
    return in_scan, (time.perf_counter() - t0) / STEPS


def main() -> None:
    frames = jnp.ones((256, 32, 32, 3), jnp.float32)  # 16 windows of 16 frames
    print(f"one CNN training step on {frames.shape}, {jax.devices()[0].device_kind}")
    for name, model in (
        ("XLA convolution", XlaConvFeatures()),
        ("im2col + matmul", FrameFeatures(CHANNELS, 32)),
    ):
        in_scan, alone = seconds_per_step(model, frames)
        print(
            f"  {name:16s} in lax.scan {in_scan * 1e3:7.1f} ms   jitted alone "
            f"{alone * 1e3:7.1f} ms   ratio {in_scan / alone:5.2f}"
        )


if __name__ == "__main__":
    main()
