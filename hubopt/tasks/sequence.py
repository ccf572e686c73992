"""Sequence regression: the shape shared by the trajectory-fitting and lane-keeping tasks.

A data set is three disjoint splits of sequences, `x (N, T, ...)` and targets
`y (N, T, 1)`. A model maps a batch of sequences to predictions of `y`'s
shape. The training loss is the MSE over every time step of a minibatch of
training sequences (drawn with replacement, fresh each step); the metrics on
a split (train, valid or test) are computed on the whole split:

    mse  = mean over sequences, steps of (ŷ − y)²        (the paper's metric)
    r2   = 1 − mse / mse_of_mean                         mse_of_mean: predicting
                                                         the training split's
                                                         mean target everywhere

so r2 > 0 means beating the mean predictor, and 1 is a perfect fit; the
metrics also carry `mean_predictor_mse` (that split's mse_of_mean).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from hubopt.tasks.base import Task


class Split(NamedTuple):
    """One split: inputs `x (N, T, ...)` and targets `y (N, T, 1)`."""

    x: np.ndarray
    y: np.ndarray


def check_splits(splits: Mapping[str, Split]) -> None:
    """`ValueError` unless train/valid/test are present, non-empty and shaped alike."""
    for name in ("train", "valid", "test"):
        if name not in splits:
            raise ValueError(f"sequence data needs a {name!r} split, got {sorted(splits)}")
        x, y = splits[name]
        if len(x) == 0 or len(x) != len(y):
            raise ValueError(f"split {name!r}: {len(x)} inputs and {len(y)} targets")
        if y.ndim != 3 or y.shape[-1] != 1 or x.shape[1] != y.shape[1]:
            raise ValueError(
                f"split {name!r}: targets must be (N, T, 1) with T = x.shape[1], got x "
                f"{x.shape}, y {y.shape}"
            )
        if x.shape[1:] != splits["train"].x.shape[1:]:
            raise ValueError(
                f"split {name!r} has inputs {x.shape[1:]}, train {splits['train'].x.shape[1:]}"
            )


def regression_task(
    *,
    name: str,
    size: str,
    splits: Mapping[str, Split],
    init: Callable[[jax.Array], Any],
    apply: Callable[[Any, jax.Array], jax.Array],
    batch_size: int,
    num_steps: int,
    hand: Mapping[str, Any],
    description: str,
    prepare: Callable[[jax.Array], jax.Array] | None = None,
    lr_grid: tuple[float, ...] = (),
) -> Task:
    """A `Task` that fits `apply(params, x) -> ŷ` to the splits by MSE.

    prepare: maps stored inputs to model inputs inside the jitted functions
      (e.g. uint8 frames to floats), so that the stored data stay compact.
    """
    check_splits(splits)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    prepare = prepare if prepare is not None else (lambda x: x)
    train = Split(jnp.asarray(splits["train"].x), jnp.asarray(splits["train"].y, jnp.float32))
    held_out = {
        k: Split(jnp.asarray(splits[k].x), jnp.asarray(splits[k].y, jnp.float32))
        for k in ("valid", "test")
    }
    held_out["train"] = train
    mean_target = float(np.mean(splits["train"].y))
    n_train = int(train.x.shape[0])

    def predict(params, x):
        return apply(params, prepare(x))

    def loss(params, batch):
        x, y = batch
        return jnp.mean(jnp.square(predict(params, x) - y))

    def batch_fn(key, step):
        del step  # every step draws afresh from the training split
        idx = jax.random.randint(key, (batch_size,), 0, n_train)
        return train.x[idx], train.y[idx]

    def metrics_fn(params, split):
        x, y = held_out[split]
        mse = jnp.mean(jnp.square(predict(params, x) - y))
        mse_of_mean = jnp.mean(jnp.square(y - mean_target))
        return {
            "mse": mse,
            "loss": mse,
            "r2": 1.0 - mse / mse_of_mean,
            "mean_predictor_mse": mse_of_mean,
        }

    return Task(
        name=name,
        init=init,
        loss=loss,
        num_steps=num_steps,
        batch=batch_fn,
        metrics_fn=metrics_fn,
        metric="mse",
        higher_is_better=False,
        hand=dict(hand),
        lr_grid=lr_grid,
        size=size,
        description=description,
    )


def mean_predictor_mse(splits: Mapping[str, Split], split: str = "test") -> float:
    """The MSE on `split` of predicting the training split's mean target everywhere."""
    mean_target = float(np.mean(splits["train"].y))
    return float(np.mean(np.square(np.asarray(splits[split].y, np.float64) - mean_target)))
