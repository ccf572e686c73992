"""hubopt in Flax training loops: Linen's `TrainState` and nnx's `Optimizer` with the loss.

The learned optimizers, VeLO and HUB take the loss as `value=`; LGL2O also takes a
loss closure `value_fn=` (params -> loss on this step's batch). Linen's
`TrainState.apply_gradients` passes neither; `TrainState` here does:

    state = hubopt.flax.TrainState.create(apply_fn=model.apply, params=params, tx=tx)

    @jax.jit
    def train_step(state, batch):
        value, grads = jax.value_and_grad(loss_fn)(state.params, batch)
        return state.apply_gradients(grads=grads, value=value,
                                     value_fn=lambda p: loss_fn(p, batch))

nnx's `Optimizer.update(model, grads, **kwargs)` passes extra arguments on, but it
hands the optimizer the model's parameters as plain arrays, so a `value_fn` must
rebuild the model from them: `nnx_value_fn(model, loss_fn, *args)` does that.

    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    value, grads = nnx.value_and_grad(loss_fn)(model, x, y)
    optimizer.update(model, grads, value=value,
                     value_fn=hubopt.flax.nnx_value_fn(model, loss_fn, x, y))

Extra arguments reach the optimizer only if it accepts them, so plain optax
optimizers work unchanged in the same loop. `import hubopt.flax` needs Flax; the
rest of hubopt does not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optax
from flax.training import train_state

from hubopt._src import members

__all__ = ["TrainState", "nnx_value_fn"]

_OVERWRITE_WITH_GRADIENT = "_overwrite_with_gradient"  # Linen's collection of that name


class TrainState(train_state.TrainState):
    """Linen's `TrainState` whose `apply_gradients` passes `value=` and `value_fn=` on."""

    def apply_gradients(
        self,
        *,
        grads,
        value: Any = None,
        value_fn: Callable[[Any], Any] | None = None,
        **kwargs,
    ):
        """One optimizer step: `tx.update(grads, opt_state, params, value=…, value_fn=…)`
        (each only where given and accepted) and `optax.apply_updates`; `step` + 1 and
        `**kwargs` replaced, as in Linen's `TrainState`."""
        extra = {k: v for k, v in (("value", value), ("value_fn", value_fn)) if v is not None}
        overwrite = isinstance(grads, dict) and _OVERWRITE_WITH_GRADIENT in grads
        grads_opt = grads["params"] if overwrite else grads
        params_opt = self.params["params"] if overwrite else self.params
        updates, new_opt_state = members.call_member(
            "optimizer", self.tx, grads_opt, self.opt_state, params_opt, extra
        )
        new_params = optax.apply_updates(params_opt, updates)
        if overwrite:
            new_params = {
                "params": new_params,
                _OVERWRITE_WITH_GRADIENT: grads[_OVERWRITE_WITH_GRADIENT],
            }
        return self.replace(
            step=self.step + 1, params=new_params, opt_state=new_opt_state, **kwargs
        )


def nnx_value_fn(model, loss_fn: Callable[..., Any], *args, wrt=None) -> Callable[[Any], Any]:
    """`params -> loss_fn(model with params, *args)` for `nnx.Optimizer.update(...,
    value_fn=...)`: `params` is what the optimizer sees (the model's `wrt` variables,
    default `nnx.Param`, as plain arrays); the model itself is not changed."""
    from flax import nnx

    wrt = nnx.Param if wrt is None else wrt
    graphdef, _params, rest = nnx.split(model, wrt, ...)

    def value_fn(params):
        return loss_fn(nnx.merge(graphdef, nnx.State(params), rest), *args)

    return value_fn
