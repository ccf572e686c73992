"""The step budget of a learned optimizer: a run past `num_steps` warns once, from the host.

Learned optimizers condition on the fraction of the run done, t/T. Past T the bundled
optimizer holds t/T at 1 and VeLO lets it pass 1; either way a run longer than its
budget is usually a wrong `num_steps` (an epoch-based loop that miscounted), so the
first step past it says so.
"""

from __future__ import annotations

import functools
import numbers
import warnings

import jax

__all__ = ["check_num_steps", "warn_once_past_budget"]


def check_num_steps(num_steps) -> int:
    """`num_steps` as an int: a `TypeError` unless it is an integer (not a bool), a
    `ValueError` unless it is at least 1."""
    if isinstance(num_steps, bool) or not isinstance(num_steps, numbers.Integral):
        raise TypeError(f"num_steps must be a positive int, got {num_steps!r}")
    if num_steps < 1:
        raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
    return int(num_steps)


def _warn(name: str, num_steps) -> None:
    warnings.warn(
        f"{name} is running past its num_steps={int(num_steps)}: it conditions on the "
        "fraction of the run done (t/T), which is now past the end; give the run's real "
        "number of steps",
        UserWarning,
        stacklevel=2,
    )


def warn_once_past_budget(name: str, step, num_steps) -> None:
    """Inside an optimizer's update: a host `UserWarning` when `step` (the 1-based step
    being taken, traced) is the first past `num_steps` (an int, or traced); nothing
    otherwise."""
    jax.lax.cond(
        step == num_steps + 1,
        lambda: jax.debug.callback(functools.partial(_warn, name), num_steps),
        lambda: None,
    )
