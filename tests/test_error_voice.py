"""One voice in errors: every public transform, called without an argument it needs,
raises a TypeError that names the transform (and, inside HUB, LGL2O or a blend, the
member's role) and the missing argument, with the call that supplies it."""

import jax
import jax.numpy as jnp
import optax
import pytest

import hubopt
from hubopt.baselines import blend, lgl2o
from hubopt.learned import pretrained
from hubopt.learned.velo_transform import init_velo_theta, velo

PARAMS = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
GRADS = jax.tree_util.tree_map(jnp.ones_like, PARAMS)
LOSS_FN = lambda p: jnp.sum(p["w"] ** 2)  # noqa: E731


def _velo():
    return velo(10, theta=init_velo_theta(jax.random.key(0), 8, 4))


def _small():
    return pretrained("small", num_steps=10)


def _all_given():
    return {"params": PARAMS, "value": jnp.float32(1.0), "value_fn": LOSS_FN}


# (transform, the name its errors use, the argument left out, the words that must appear)
CASES = [
    (_velo, "velo", "params", "velo needs the params"),
    (
        _velo,
        "velo",
        "value",
        "velo needs the loss as value=: update(grads, state, params, value=loss)",
    ),
    (_small, "small", "params", "hubopt-small needs the params"),
    (_small, "small", "value", "hubopt-small needs the loss as value="),
    (
        lambda: lgl2o(optax.adam(1e-3), optax.adamax(1e-3)),
        "lgl2o",
        "params",
        "lgl2o needs the params",
    ),
    (
        lambda: lgl2o(optax.adam(1e-3), optax.adamax(1e-3)),
        "lgl2o",
        "value_fn",
        "lgl2o needs a loss closure as value_fn=",
    ),
    (
        lambda: hubopt.hub(optax.adam(1e-3), _velo()),
        "hub",
        "value",
        "hub: its learned optimizer: velo needs the loss as value=",
    ),
    (
        lambda: hubopt.hub(optax.adam(1e-3), _small()),
        "hub",
        "params",
        "hub: its learned optimizer: hubopt-small needs the params",
    ),
    (
        lambda: hubopt.hub(optax.adam(1e-3), _small(), sigma="rank", mode="inverted"),
        "hub",
        "value",
        "hub: its learned optimizer: hubopt-small needs the loss",
    ),
    (
        lambda: blend(optax.adam(1e-3), _velo(), lam=0.5),
        "blend",
        "value",
        "blend: its learned optimizer: velo needs the loss as value=",
    ),
    (
        lambda: lgl2o(optax.adam(1e-3), _small()),
        "lgl2o",
        "value",
        "lgl2o: its learned optimizer: hubopt-small needs the loss",
    ),
]


@pytest.mark.parametrize(
    "make, name, left_out, words", CASES, ids=[f"{c[1]}-{c[2]}-{i}" for i, c in enumerate(CASES)]
)
def test_a_missing_argument_is_named_by_the_transform(make, name, left_out, words):
    tx = make()
    state = tx.init(PARAMS)
    given = _all_given()
    params = None if left_out == "params" else given.pop("params")
    given.pop(left_out, None)
    with pytest.raises(TypeError) as caught:
        tx.update(GRADS, state, params, **given)
    assert words in str(caught.value)


def test_the_same_transforms_run_when_given_everything():
    for make, *_ in CASES:
        tx = make()
        updates, _ = tx.update(GRADS, tx.init(PARAMS), **_all_given())
        assert all(bool(jnp.all(jnp.isfinite(u))) for u in jax.tree_util.tree_leaves(updates))
