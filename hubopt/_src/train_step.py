"""The one training step, shared by the benchmark runner and meta-training's inner loop.

    batch    = task.batch(batch_key(step), step)          (None for a deterministic task)
    value, g = value_and_grad(task.loss)(params, batch)
    U, state = tx.update(g, state, params, value=value, value_fn=loss(·, batch))
    params   = params + U

Each extra arg reaches the optimizer only if it accepts it (`members.call_member`);
`value_fn` is what LGL2O evaluates its candidates with, on the same batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import optax

from hubopt._src import members

__all__ = ["step_batch", "train_step"]


def step_batch(task, batch_key: Callable[[jax.Array], jax.Array], step):
    """The batch step `step` trains on: `task.batch(batch_key(step), step)`, or None for
    a deterministic task."""
    return task.batch(batch_key(step), step) if task.stochastic else None


def train_step(
    task,
    tx: optax.GradientTransformation,
    batch_key: Callable[[jax.Array], jax.Array],
    observe: Callable[[Any, jax.Array, Any, Any], Any] | None = None,
):
    """The scan body `((params, opt_state), step) -> ((params', opt_state'), loss)` of `tx`
    on `task` (a `hubopt.tasks.Task`); `batch_key(step)` is the key of that step's batch.
    The loss returned is the training loss of the params before the update.

    `observe(aux, step, grads, opt_state) -> aux`: the carry is then
    `(params, opt_state, aux)`, and aux is updated at every step from that step's
    gradient and the state its update starts from (the runner's σ histograms: no second
    program computing the gradient again)."""

    def one_step(carry, step):
        params, opt_state = carry[:2]
        batch = step_batch(task, batch_key, step)
        value, grads = jax.value_and_grad(task.loss)(params, batch)

        def value_fn(p):  # the loss on this step's batch (what LGL2O compares)
            return task.loss(p, batch)

        updates, new_state = members.call_member(
            "optimizer", tx, grads, opt_state, params, {"value": value, "value_fn": value_fn}
        )
        new_carry = (optax.apply_updates(params, updates), new_state)
        if observe is not None:
            new_carry += (observe(carry[2], step, grads, opt_state),)
        return new_carry, value

    return one_step
