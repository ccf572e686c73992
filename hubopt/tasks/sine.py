r"""Trajectory fitting (paper Table 2, Fig. 4a/10): three sines in, a periodic target out.

Following the ncps sine example the paper uses, every sequence is sampled
at T evenly spaced times over three half-periods of its slowest wave. With
phases φ₁, φ₂, φ₃ drawn uniformly per sequence and θ_k(t) = k·ω·t + φ_k
(ω = 3π / T per step), the inputs and target are

    x_t = (sin θ₁(t), sin θ₂(t), sin θ₃(t))
    y_t = 0.6 · sin 2θ₁(t) + 0.4 · sin(θ₂(t) + θ₃(t))

The target is not a function of x_t alone: sin 2θ₁ = 2 sin θ₁ cos θ₁ and
sin(θ₂ + θ₃) need the cosines, i.e. the waves' direction of travel, which a
recurrent state must infer from the past. Predicting the mean everywhere
scores an MSE of about 0.26.

Departures from the paper, and why. The paper (after the ncps example) fits
one fixed sequence and reports its training error. We draw many sequences
with random phases and keep three disjoint sets of them (train / valid /
test, from separate random streams), so that the reported test MSE is
measured on sequences no optimizer saw. Models: the paper's 8-cell
NCP-wired LTC (`ncps.wirings.AutoNCP(8, 1)`, seed 22222) and an LSTM with 64
units. Hand preset: Adam, lr 0.01, constant (the paper's). Budgets per size
in `SIZES`; "paper" keeps the models and lengthens the run.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from hubopt.tasks.base import Task
from hubopt.tasks.sequence import Split, regression_task

NUM_INPUTS = 3
WIRING_SEED = 22222
DATA_SEED = 20_240_101  # fixed: every run of a task sees the same three splits


class SineSize(NamedTuple):
    """How big one size of the sine tasks is."""

    seq_len: int
    num_train: int
    num_valid: int
    num_test: int
    batch_size: int
    num_steps: int


SIZES: dict[str, SineSize] = {
    "tiny": SineSize(
        seq_len=16, num_train=32, num_valid=16, num_test=16, batch_size=8, num_steps=20
    ),
    "cpu": SineSize(
        seq_len=48, num_train=1024, num_valid=256, num_test=256, batch_size=32, num_steps=2000
    ),
    "paper": SineSize(
        seq_len=48, num_train=4096, num_valid=512, num_test=512, batch_size=64, num_steps=10_000
    ),
}

HAND = {"name": "adam", "learning_rate": 0.01}
LR_GRID = (3e-2, 1e-2, 3e-3, 1e-3)  # tried by a tuned baseline (`hubopt.bench.tuning`)


def sine_sequences(num: int, seq_len: int, rng: np.random.Generator) -> Split:
    """`num` sequences of the module docstring's waves, float32 `x (num, T, 3)`, `y (num, T, 1)`."""
    if num < 1 or seq_len < 2:
        raise ValueError(f"need num >= 1 and seq_len >= 2, got {num}, {seq_len}")
    omega = 3 * np.pi / seq_len
    t = np.arange(seq_len, dtype=np.float64)
    phases = rng.uniform(0.0, 2 * np.pi, (num, NUM_INPUTS))
    k = np.arange(1, NUM_INPUTS + 1, dtype=np.float64)
    theta = k[None, None, :] * omega * t[None, :, None] + phases[:, None, :]  # (num, T, 3)
    x = np.sin(theta)
    y = 0.6 * np.sin(2 * theta[..., 0]) + 0.4 * np.sin(theta[..., 1] + theta[..., 2])
    return Split(x.astype(np.float32), y[..., None].astype(np.float32))


def sine_splits(size: SineSize) -> dict[str, Split]:
    """Train, valid and test sequences from three independent streams of `DATA_SEED`."""
    streams = np.random.SeedSequence(DATA_SEED).spawn(3)
    counts = {"train": size.num_train, "valid": size.num_valid, "test": size.num_test}
    return {
        name: sine_sequences(n, size.seq_len, np.random.default_rng(stream))
        for (name, n), stream in zip(counts.items(), streams, strict=True)
    }


def make_task(model: str, size: str) -> Task:
    """`sine_ltc` (model "ltc") or `sine_lstm` (model "lstm") at `size`."""
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; sizes: {', '.join(SIZES)}")
    spec = SIZES[size]
    splits = sine_splits(spec)
    x_example = jnp.zeros((1, spec.seq_len, NUM_INPUTS), jnp.float32)
    if model == "lstm":
        from hubopt.tasks.models.lstm import lstm_regressor

        init_model, apply = lstm_regressor(hidden=64, out=1)
        what = "an LSTM with 64 units and a linear read-out"
    elif model == "ltc":
        from hubopt.tasks.models.ltc_regressor import ncp_ltc_regressor

        init_model, apply = ncp_ltc_regressor(
            units=8, motor=1, input_dim=NUM_INPUTS, wiring_seed=WIRING_SEED
        )
        what = f"an 8-cell NCP-wired LTC (ncps AutoNCP(8, 1), seed {WIRING_SEED})"
    else:
        raise ValueError(f"model must be 'ltc' or 'lstm', got {model!r}")

    def init(key):
        return init_model(key, x_example)

    return regression_task(
        name=f"sine_{model}",
        size=size,
        splits=splits,
        init=init,
        apply=apply,
        batch_size=spec.batch_size,
        num_steps=spec.num_steps,
        hand=HAND,
        lr_grid=LR_GRID,
        description=(
            f"Trajectory fitting (HUB paper Table 2, Fig. 4a): three sines with random phases "
            f"in, 0.6 sin 2θ₁ + 0.4 sin(θ₂+θ₃) out, {spec.seq_len} steps; {what}; test MSE "
            f"on {spec.num_test} unseen sequences. Departs from the paper: many random-phase "
            "sequences with disjoint train/valid/test sets instead of one fixed sequence"
        ),
    )
