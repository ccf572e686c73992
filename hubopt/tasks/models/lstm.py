"""An LSTM sequence regressor in Flax: x (B, T, D) -> ŷ (B, T, out).

    h_t, c_t = LSTM(x_t, h_{t−1}, c_{t−1})        (Hochreiter & Schmidhuber 1997;
                                                  Flax's cell: forget bias 0)
    ŷ_t      = W h_t + b

from a zero state, over every step. `init`/`apply` are the pure functions a
task uses: `params = init(key, x_example)`, `y = apply(params, x)`.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from hubopt.tasks.models import pure_functions


class LSTMRegressor(nn.Module):
    """LSTM with `hidden` units and a linear read-out of `out` values per step."""

    hidden: int = 64
    out: int = 1

    @nn.compact
    def __call__(self, x_BTD: jax.Array) -> jax.Array:
        h_BTH = nn.RNN(nn.OptimizedLSTMCell(self.hidden), name="lstm")(x_BTD)
        return nn.Dense(self.out, name="readout")(h_BTH)


def lstm_regressor(hidden: int = 64, out: int = 1):
    """`(init, apply)` of an `LSTMRegressor`: `init(key, x_example) -> params`."""
    if hidden < 1 or out < 1:
        raise ValueError(f"hidden and out must be >= 1, got {hidden}, {out}")
    return pure_functions(LSTMRegressor(hidden=hidden, out=out))
