"""Every public transform's state can be donated to a jitted step (`donate_argnums`), as a
training loop written for speed does: no two leaves of a state share a buffer (XLA
refuses to donate one buffer twice), and the donated steps give the same result as
steps that keep their inputs."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from test_bad_inputs import LOSS_FN, PARAMS, TRANSFORMS, _velo

import hubopt
from hubopt.baselines import lgl2o

CASES = {
    **TRANSFORMS,
    "hub_velo": lambda: hubopt.hub(optax.adam(1e-3), _velo()),
    "lgl2o_velo": lambda: lgl2o(optax.adam(1e-3), _velo()),
}


def _step(tx):
    def step(params, state):
        value, grads = jax.value_and_grad(LOSS_FN)(params)
        updates, state = tx.update(grads, state, params, value=value, value_fn=LOSS_FN)
        return optax.apply_updates(params, updates), state

    return step


@pytest.mark.parametrize("key", sorted(CASES))
def test_a_state_can_be_donated_every_step(key):
    tx = CASES[key]()
    state = tx.init(PARAMS)
    leaves = jax.tree_util.tree_leaves(state)
    assert len({id(x) for x in leaves}) == len(leaves), "two leaves are one array"
    kept = jax.jit(_step(tx))
    donated = jax.jit(_step(tx), donate_argnums=(0, 1))
    p_kept, s_kept = PARAMS, state
    p_don, s_don = jax.tree_util.tree_map(jnp.copy, (PARAMS, state))
    for _ in range(3):
        p_kept, s_kept = kept(p_kept, s_kept)
        p_don, s_don = donated(p_don, s_don)
    for a, b in zip(
        jax.tree_util.tree_leaves(p_kept), jax.tree_util.tree_leaves(p_don), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
