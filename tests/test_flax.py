"""hubopt.flax: Linen's TrainState and nnx's Optimizer pass the loss on, equal to plain loops."""

from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from flax.training import train_state

import hubopt
import hubopt.flax
from hubopt.baselines import lgl2o, lgl2o_stats
from hubopt.learned import small, velo

# VeLO's checkpoint format with random meta-parameters (H = 32, K = 8): the test data of
# ../shared/velo; the real checkpoint (`hubopt velo download`) runs the same code
VELO_PARAMS = Path(__file__).resolve().parents[1].parent / "shared" / "velo" / "small" / "params"

X = jax.random.normal(jax.random.key(0), (32, 4))
Y = jnp.sin(X @ jnp.arange(1.0, 5.0))[:, None]


def _flat(tree):
    return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree_util.tree_leaves(tree)])


def _optimizers():
    return {
        "hub": hubopt.hub(optax.adam(1e-2), optax.adamax(3e-2)),
        "lgl2o": lgl2o(optax.adam(1e-2), optax.adamax(3e-2)),  # needs value_fn
        "adam": optax.adam(1e-2),  # a plain optax optimizer: the extras are not passed
        "hub_small": hubopt.hub(optax.adam(1e-2), small(num_steps=5)),
        "hub_velo": hubopt.hub(optax.adam(1e-2), velo(5, theta=VELO_PARAMS)),
    }


@pytest.mark.parametrize("name", ["hub", "lgl2o", "adam", "hub_small", "hub_velo"])
def test_linen_train_state_equals_the_plain_loop(name):
    model = nn.Dense(1)
    params = model.init(jax.random.key(1), X)

    def loss_fn(p):
        return jnp.mean((model.apply(p, X) - Y) ** 2)

    tx = _optimizers()[name]
    state = hubopt.flax.TrainState.create(apply_fn=model.apply, params=params, tx=tx)

    @jax.jit
    def step(state):
        value, grads = jax.value_and_grad(loss_fn)(state.params)
        return state.apply_gradients(grads=grads, value=value, value_fn=loss_fn)

    p, opt_state = params, tx.init(params)
    for _ in range(5):
        state = step(state)
        value, grads = jax.value_and_grad(loss_fn)(p)
        if name == "adam":
            u, opt_state = tx.update(grads, opt_state, p)
        else:
            u, opt_state = tx.update(grads, opt_state, p, value=value, value_fn=loss_fn)
        p = optax.apply_updates(p, u)
    assert int(state.step) == 5
    np.testing.assert_allclose(_flat(state.params), _flat(p), rtol=1e-6, atol=1e-7)
    if name != "hub_velo":  # random meta-parameters promise no descent
        assert float(loss_fn(state.params)) < float(loss_fn(params))
    if name == "adam":  # and the same as Linen's own TrainState
        ref = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)
        for _ in range(5):
            ref = ref.apply_gradients(grads=jax.grad(loss_fn)(ref.params))
        np.testing.assert_allclose(_flat(state.params), _flat(ref.params), rtol=1e-6)
    if name == "lgl2o":
        assert lgl2o_stats(state.opt_state)["steps"] == 5


class _Model(nnx.Module):
    def __init__(self, rngs):
        self.dense = nnx.Linear(4, 1, rngs=rngs)

    def __call__(self, x):
        return self.dense(x)


def _nnx_loss(model, x, y):
    return jnp.mean((model(x) - y) ** 2)


@pytest.mark.parametrize("name", ["hub", "lgl2o", "hub_small", "hub_velo"])
def test_nnx_optimizer_with_the_value_fn_helper_equals_the_plain_loop(name):
    model = _Model(nnx.Rngs(0))
    graphdef, params0, rest = nnx.split(model, nnx.Param, ...)
    tx = _optimizers()[name]
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    value_fn = hubopt.flax.nnx_value_fn(model, _nnx_loss, X, Y)
    pure0 = nnx.to_pure_dict(params0)
    assert float(value_fn(pure0)) == pytest.approx(float(_nnx_loss(model, X, Y)), rel=1e-6)
    for _ in range(4):
        value, grads = nnx.value_and_grad(_nnx_loss)(model, X, Y)
        optimizer.update(
            model, grads, value=value, value_fn=hubopt.flax.nnx_value_fn(model, _nnx_loss, X, Y)
        )

    def pure_loss(p):
        return _nnx_loss(nnx.merge(graphdef, nnx.State(p), rest), X, Y)

    p, opt_state = pure0, tx.init(pure0)
    for _ in range(4):
        value, grads = jax.value_and_grad(pure_loss)(p)
        u, opt_state = tx.update(grads, opt_state, p, value=value, value_fn=pure_loss)
        p = optax.apply_updates(p, u)
    got = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    np.testing.assert_allclose(_flat(got), _flat(p), rtol=1e-6, atol=1e-7)
    if name == "hub":  # diagnostics name the tensors, not nnx's Variable wrappers
        paths = set(hubopt.hub_stats(optimizer.opt_state))
        assert paths == {"dense/bias", "dense/kernel"}
