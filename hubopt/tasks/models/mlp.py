"""A multilayer perceptron on flattened images, params only.

    h₀ = flatten(x)                       (N, H·W·C)
    hₖ = relu(hₖ₋₁ Wₖ + bₖ)                k = 1 … len(widths)
    logits = h Wₒ + bₒ

Dense layers with Flax's default initialisation (LeCun normal kernels, zero
biases). Learned optimizers' standard benchmark is such a network on
Fashion-MNIST (learned_optimization's `FashionMnist` MLP tasks); its first
layer is a wide tensor (784 × width entries), the case where σ = softmax(|g|)
gives the hand optimizer about 1/n of the weight.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax


class MLP(nn.Module):
    """ReLU hidden layers of `widths`, then a dense layer to `num_classes` logits."""

    num_classes: int
    widths: Sequence[int]

    @nn.compact
    def __call__(self, x_NHWC: jax.Array) -> jax.Array:
        x = x_NHWC.reshape(x_NHWC.shape[0], -1)
        for i, width in enumerate(self.widths):
            x = nn.relu(nn.Dense(width, name=f"hidden{i}")(x))
        return nn.Dense(self.num_classes, name="head")(x)
