"""The task contract: what a test problem is, in one small file.

A task is a frozen bundle of pure functions over a parameter pytree, named
DeepOBS-style `<data>_<model>` (`nonconvex_l1cos`, later `mnist_mlp`, ...):

    params = task.init(key)                 # a pytree of arrays
    loss   = task.loss(params, batch)       # a scalar; batch is None for
                                            # deterministic (full-batch) tasks
    batch  = task.batch(key, step)          # stochastic tasks only: pure and
                                            # jittable, so a lax.scan can draw it
    ev     = task.eval_loss(params)         # untimed evaluation (default:
                                            # loss(params, None))

A task also declares its own budget (`num_steps`, the recommended number of
optimizer steps) and, if it has one, a `target_loss` (AlgoPerf's "target
metric": a run reaches the target at the first step whose loss is <= it).
How a run is trained, timed and recorded is not the task's business
(`hubopt.bench.runner`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax

Params = Any
Batch = Any


@dataclass(frozen=True)
class Task:
    """One test problem. All callables are pure JAX functions.

    Attributes:
      name: `<data>_<model>`, unique in the registry (`hubopt.tasks.TASKS`).
      init: `key -> params`.
      loss: `(params, batch) -> scalar` training loss; `batch` is None when
        `batch` (below) is None.
      num_steps: the recommended number of optimizer steps (the budget).
      batch: `(key, step) -> batch` for stochastic tasks, None for
        deterministic ones.
      eval_fn: `params -> scalar` evaluation loss (held-out data for
        stochastic tasks); None means `loss(params, None)`.
      target_loss: the loss a good run should reach, or None.
      description: one line: what the task is and where it comes from.
    """

    name: str
    init: Callable[[jax.Array], Params]
    loss: Callable[[Params, Batch | None], jax.Array]
    num_steps: int
    batch: Callable[[jax.Array, jax.Array], Batch] | None = None
    eval_fn: Callable[[Params], jax.Array] | None = None
    target_loss: float | None = None
    description: str = ""

    def __post_init__(self):
        if not isinstance(self.name, str) or "_" not in self.name:
            raise ValueError(f"Task name must be '<data>_<model>', got {self.name!r}")
        for field in ("init", "loss"):
            if not callable(getattr(self, field)):
                raise TypeError(f"Task {self.name}: {field} must be callable")
        for field in ("batch", "eval_fn"):
            value = getattr(self, field)
            if value is not None and not callable(value):
                raise TypeError(f"Task {self.name}: {field} must be callable or None")
        if (
            isinstance(self.num_steps, bool)
            or not isinstance(self.num_steps, int)
            or self.num_steps < 1
        ):
            raise ValueError(
                f"Task {self.name}: num_steps must be a positive int, got {self.num_steps!r}"
            )

    @property
    def stochastic(self) -> bool:
        """Whether each step draws a batch (`batch` is given)."""
        return self.batch is not None

    def eval_loss(self, params: Params) -> jax.Array:
        """The untimed evaluation loss of `params`."""
        if self.eval_fn is not None:
            return self.eval_fn(params)
        return self.loss(params, None)
