"""An NCP-wired LTC sequence regressor in Flax: x (B, T, I) -> ŷ (B, T, motor).

The cell is `hubopt.tasks.models.ltc` (ncps's LTC, exact); the wiring is
ncps's `AutoNCP(units, motor, seed=wiring_seed)` built for `input_dim`
inputs, and stays fixed (its masks are constants, not parameters). The
read-out is the cell's own affine output mapping of the motor neurons, from
a zero state, at every step, as in ncps's `LTC(..., return_sequences=True)`.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from hubopt.tasks.models import ltc, pure_functions


@functools.lru_cache(maxsize=32)
def _wiring(units: int, motor: int, input_dim: int, seed: int):
    adjacency, sensory = ltc.ncp_wiring(units, motor, input_dim, seed)
    return adjacency, sensory


class LTCRegressor(nn.Module):
    """An LTC with an `AutoNCP(units, motor, seed=wiring_seed)` wiring over `input_dim` inputs."""

    units: int = 8
    motor: int = 1
    input_dim: int = 3
    wiring_seed: int = 22222

    def masks(self) -> ltc.LTCMasks:
        adjacency, sensory = _wiring(self.units, self.motor, self.input_dim, self.wiring_seed)
        return ltc.LTCMasks(jnp.asarray(adjacency), jnp.asarray(sensory), self.motor)

    @nn.compact
    def __call__(self, x_BTI: jax.Array) -> jax.Array:
        if x_BTI.shape[-1] != self.input_dim:
            raise ValueError(
                f"LTCRegressor built for {self.input_dim} inputs, got {x_BTI.shape[-1]}"
            )
        masks = self.masks()
        params = self.param(
            "cell",
            lambda key: ltc.init_ltc(key, masks.adjacency, masks.sensory_adjacency, self.motor),
        )
        y_BTM, _ = ltc.ltc_sequence(params, masks, x_BTI)
        return y_BTM


def ncp_ltc_regressor(units: int, motor: int, input_dim: int, wiring_seed: int):
    """`(init, apply)` of an `LTCRegressor`: `init(key, x_example) -> params`."""
    return pure_functions(
        LTCRegressor(units=units, motor=motor, input_dim=input_dim, wiring_seed=wiring_seed)
    )
