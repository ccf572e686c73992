"""Tuned hand-designed baselines: a declared learning-rate grid, chosen on the valid split.

A fair comparison gives the hand-designed optimizer the tuning a user would:
the task's optimizer and schedule family (`task.hand`), with the learning rate
taken from the task's declared grid (`task.lr_grid`). Each rate is trained with
several seeds; the rate chosen is the one with the best mean *valid* metric,

    lr* = argmin_lr  mean_seeds  metric_valid(lr, seed)      (argmax if higher is better)

where a run whose valid metric is not finite (it diverged) makes its rate
ineligible. Test metrics are never looked at here: they are for reporting the
chosen rate's runs. Ties go to the rate listed first in the grid.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["grid_specs", "select_learning_rate"]


def grid_specs(hand: Mapping[str, Any], lr_grid: Sequence[float]) -> list[dict]:
    """`hand` with each learning rate of `lr_grid` (schedule and the rest unchanged)."""
    if not lr_grid:
        raise ValueError("lr_grid is empty: the task declares no learning rates to try")
    if len(set(lr_grid)) != len(lr_grid):
        raise ValueError(f"lr_grid has repeated rates: {list(lr_grid)}")
    return [{**hand, "learning_rate": float(lr)} for lr in lr_grid]


def select_learning_rate(
    records: Iterable[Mapping[str, Any]],
    lr_grid: Sequence[float],
    *,
    metric: str,
    higher_is_better: bool,
    seeds: Sequence[int],
) -> dict:
    """The grid's rate with the best mean valid `metric` over `seeds`, from run records.

    Every (rate, seed) pair must have exactly one record (a missing or duplicate
    run is a `ValueError`: a choice over fewer seeds would not be the declared
    one). Returns a JSON-able dict: the chosen rate, and per rate the valid
    metric of each seed, their mean and sample std, and whether it was eligible.
    """
    if not seeds:
        raise ValueError("seeds is empty")
    wanted = {(float(lr), int(s)) for lr in lr_grid for s in seeds}
    found: dict[tuple[float, int], float] = {}
    for record in records:
        key = (float(record["hyperparameters"]["learning_rate"]), int(record["seed"]))
        if key not in wanted:
            continue
        if key in found:
            raise ValueError(f"two records for learning rate {key[0]} and seed {key[1]}")
        found[key] = float(record["metrics"]["valid"][metric])
    missing = sorted(wanted - set(found))
    if missing:
        raise ValueError(f"no record for (learning rate, seed) {missing}")
    rows = []
    for lr in lr_grid:
        values = [found[(float(lr), int(s))] for s in seeds]
        finite = all(math.isfinite(v) for v in values)
        mean = sum(values) / len(values)
        std = (
            math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
            if len(values) > 1 and finite
            else 0.0
        )
        rows.append(
            {
                "learning_rate": float(lr),
                "valid": values,
                "mean": mean if finite else math.nan,
                "std": std if finite else math.nan,
                "eligible": finite,
            }
        )
    eligible = [r for r in rows if r["eligible"]]
    if not eligible:
        raise ValueError(f"every learning rate of {list(lr_grid)} diverged on some seed")
    sign = -1.0 if higher_is_better else 1.0
    best = min(eligible, key=lambda r: sign * r["mean"])  # first of equals wins
    return {
        "metric": metric,
        "split": "valid",
        "higher_is_better": bool(higher_is_better),
        "seeds": [int(s) for s in seeds],
        "learning_rate": best["learning_rate"],
        "grid": rows,
    }
