r"""SIREN (Sitzmann et al. 2020): an MLP with sine activations, fitting coordinates to values.

With input x ∈ [−1, 1]^d, width w and L weight layers,

    h₁      = sin(ω₀ (W₁ x + b₁))
    h_{l+1} = sin(ω₀ (W_{l+1} h_l + b_{l+1}))      l = 1, …, L − 2
    y       = W_L h_{L−1} + b_L                    (a linear output layer)

Layers are counted as the reference implementation counts them: its
`Siren(hidden_layers=5, outermost_linear=True)` is a first sine layer, 5
hidden sine layers and the linear output, 7 weight layers in all; that is
`num_layers=7` here (the HUB paper's "7-layer SIREN").

Initialisation, with n the layer's fan-in:

    W₁ ~ U(−1/n, 1/n)                              the first layer
    W_l ~ U(−√(6/n)/ω₀, √(6/n)/ω₀)                 every later layer, the output's included
    b_l ~ U(−1/√n, 1/√n)                           every layer

The weights follow the paper (§3.2) and its reference code, which also
initialises the linear output layer with the hidden rule; the biases are
PyTorch's `nn.Linear` default, which the reference code keeps. With inputs
arcsine-distributed on [−1, 1] (variance ½), ω₀·W_l h has variance
n · (6/n)/3 · ½ = 1, so every sine layer's output stays arcsine-like with
variance near ½ however deep the network. ω₀ = 20 (the HUB paper's; the
SIREN paper's default is 30).

Parameter count, for input size d, output size o:

    P(w) = (d + 1)·w + (L − 2)·(w + 1)·w + (w + 1)·o
         = 5w² + 10w + 1        for d = 3, o = 1, L = 7.

`width_for_params(target)` picks the width whose P(w) is nearest a target
(the HUB volume task's: number of voxels / 256, a 256× compression).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from hubopt.tasks.models import pure_functions

OMEGA_0 = 20.0
NUM_LAYERS = 7


def symmetric_uniform(bound: float) -> Callable:
    """A Flax initializer drawing U(−bound, bound)."""

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def first_layer_bound(fan_in: int) -> float:
    """W₁ ~ U(−1/n, 1/n)."""
    return 1.0 / fan_in


def later_layer_bound(fan_in: int, omega_0: float = OMEGA_0) -> float:
    """W_l ~ U(−√(6/n)/ω₀, √(6/n)/ω₀), l ≥ 2."""
    return math.sqrt(6.0 / fan_in) / omega_0


def bias_bound(fan_in: int) -> float:
    """b_l ~ U(−1/√n, 1/√n) (PyTorch's `nn.Linear` default)."""
    return 1.0 / math.sqrt(fan_in)


class Siren(nn.Module):
    """Coordinates (..., in_dim) -> values (..., out_dim); see the module docstring.

    Parameters are named `sine_0` … `sine_{L−2}` (the sine layers) and `out`.
    """

    width: int
    num_layers: int = NUM_LAYERS
    out_dim: int = 1
    omega_0: float = OMEGA_0

    @nn.compact
    def __call__(self, x):
        if self.num_layers < 2:
            raise ValueError(f"a SIREN needs num_layers >= 2, got {self.num_layers}")
        h = x
        for i in range(self.num_layers - 1):
            fan_in = h.shape[-1]
            bound = first_layer_bound(fan_in) if i == 0 else later_layer_bound(fan_in, self.omega_0)
            dense = nn.Dense(
                self.width,
                kernel_init=symmetric_uniform(bound),
                bias_init=symmetric_uniform(bias_bound(fan_in)),
                name=f"sine_{i}",
            )
            h = jnp.sin(self.omega_0 * dense(h))
        fan_in = h.shape[-1]
        out = nn.Dense(
            self.out_dim,
            kernel_init=symmetric_uniform(later_layer_bound(fan_in, self.omega_0)),
            bias_init=symmetric_uniform(bias_bound(fan_in)),
            name="out",
        )
        return out(h)


def num_params(width: int, num_layers: int = NUM_LAYERS, in_dim: int = 3, out_dim: int = 1) -> int:
    """P(w) = (d + 1)·w + (L − 2)·(w + 1)·w + (w + 1)·o (5w² + 10w + 1 for the 7-layer 3-D one)."""
    return (in_dim + 1) * width + (num_layers - 2) * (width + 1) * width + (width + 1) * out_dim


def width_for_params(
    target: float, num_layers: int = NUM_LAYERS, in_dim: int = 3, out_dim: int = 1
) -> int:
    """The width w ≥ 1 whose `num_params(w)` is nearest `target` (the smaller on a tie)."""
    if not target > 0:
        raise ValueError(f"target parameter count must be positive, got {target}")

    def p(w):
        return num_params(w, num_layers, in_dim, out_dim)

    width = 1
    while p(width + 1) <= target:  # P grows with w: stop at P(w) <= target < P(w + 1)
        width += 1
    return width + 1 if abs(p(width + 1) - target) < abs(p(width) - target) else width


def siren(
    width: int,
    num_layers: int = NUM_LAYERS,
    out_dim: int = 1,
    omega_0: float = OMEGA_0,
) -> tuple[Callable, Callable]:
    """`(init, apply)` of a `Siren`: `init(key, x_example) -> params`, `apply(params, x) -> y`."""
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    return pure_functions(
        Siren(width=width, num_layers=num_layers, out_dim=out_dim, omega_0=omega_0)
    )
