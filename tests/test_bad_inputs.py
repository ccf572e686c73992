"""The catalogue of bad inputs for every public transform: each one gets a TypeError or
ValueError whose message names the problem (checked against a phrase), never a shape
error from inside XLA and never a silently wrong update.

One voice for a missing argument: a transform called without an argument it needs
raises a TypeError that names the transform (and, inside HUB, LGL2O or a blend, the
member's role) and the missing argument, with the call that supplies it."""

import jax
import jax.numpy as jnp
import optax
import pytest

import hubopt
from hubopt.baselines import blend, lgl2o
from hubopt.learned import MLPLOpt, small, velo
from hubopt.learned.velo_lopt.transform import init_velo_theta

PARAMS = {"w": jnp.ones((3, 2)) * 0.5, "b": jnp.zeros(2)}
GRADS = jax.tree_util.tree_map(jnp.ones_like, PARAMS)
LOSS_FN = lambda p: jnp.sum(p["w"] ** 2)  # noqa: E731


def _velo():
    return velo(10, theta=init_velo_theta(jax.random.key(0), 8, 4))


def _small():
    return small(num_steps=10)


def _adams():
    return optax.adam(1e-3), optax.adamax(1e-3)


TRANSFORMS = {
    "hub": lambda: hubopt.hub(*_adams()),
    "hub_inverted": lambda: hubopt.hub(*_adams(), mode="inverted"),
    "hub_rank": lambda: hubopt.hub(*_adams(), sigma="rank"),
    "hub_lognormal_clip": lambda: hubopt.hub(*_adams(), sigma="lognormal", clip=(0.1, 0.9)),
    "hub_hyper": lambda: hubopt.hub(*_adams(), sigma="hyper"),
    "hub_blocks": lambda: hubopt.hub(*_adams(), blocks={"w": "inverted", "b": "default"}),
    "hub_small": lambda: hubopt.hub(optax.adam(1e-3), _small()),
    "blend": lambda: blend(*_adams(), lam=0.5),
    "lgl2o": lambda: lgl2o(*_adams()),
    "velo": _velo,
    "small": _small,
}
NAMES = {"hub_small": "hub", "small": "small"}  # the name each one's errors use


def _name(key: str) -> str:
    return NAMES.get(key, key.split("_")[0])


# (case, grads, params, phrase the message must hold); params None: the real PARAMS
GRAD_CASES = [
    ("integer leaf", {"w": jnp.ones((3, 2), jnp.int32), "b": GRADS["b"]}, None, "dtype int32"),
    ("boolean leaf", {"w": GRADS["w"], "b": jnp.ones(2, bool)}, None, "dtype bool"),
    ("other tree", {"v": GRADS["w"], "b": GRADS["b"]}, None, "the gradients' tree differs"),
    ("missing leaf", {"w": GRADS["w"]}, None, "the gradients' tree differs"),
    ("reshaped leaf", {"w": jnp.ones((2, 3)), "b": GRADS["b"]}, None, "has shape (2, 3)"),
    ("params reshaped", GRADS, {"w": jnp.ones((6,)), "b": jnp.zeros(2)}, "its parameter"),
]


@pytest.mark.parametrize("case, grads, params, phrase", GRAD_CASES, ids=[c[0] for c in GRAD_CASES])
@pytest.mark.parametrize("key", list(TRANSFORMS))
def test_bad_gradients_are_named(key, case, grads, params, phrase):
    tx = TRANSFORMS[key]()
    state = tx.init(PARAMS)
    with pytest.raises((TypeError, ValueError)) as caught:
        tx.update(grads, state, PARAMS if params is None else params, value=1.0, value_fn=LOSS_FN)
    message = str(caught.value)
    assert phrase in message, message
    assert message.startswith(_name(key)), message


@pytest.mark.parametrize("key", ["hub", "blend", "lgl2o", "velo", "small"])
def test_an_empty_tree_is_named(key):
    tx = TRANSFORMS[key]()
    with pytest.raises(ValueError, match="has no arrays"):
        tx.update({}, tx.init(PARAMS), {}, value=1.0, value_fn=LOSS_FN)


@pytest.mark.parametrize("key", ["velo", "small", "hub_small"])
def test_a_non_scalar_loss_is_named(key):
    tx = TRANSFORMS[key]()
    with pytest.raises(ValueError, match=r"value= must be the scalar loss.*\(3,\)"):
        tx.update(GRADS, tx.init(PARAMS), PARAMS, value=jnp.ones(3))


def test_lgl2os_loss_closure_must_return_a_scalar():
    tx = lgl2o(*_adams())
    with pytest.raises(ValueError, match="scalar"):
        tx.update(GRADS, tx.init(PARAMS), PARAMS, value_fn=lambda p: p["w"])


BUILD_CASES = [
    (lambda: hubopt.hub(*_adams(), mode="sideways"), ValueError, "mode must be one of"),
    (lambda: hubopt.hub(*_adams(), clip=(0.9, 0.1)), ValueError, "B <= A"),
    (lambda: hubopt.hub(*_adams(), clip=(-0.1, 0.5)), ValueError, "lower bound B"),
    (lambda: hubopt.hub(*_adams(), clip=(0.1, 1.5)), ValueError, "upper bound A"),
    (lambda: hubopt.hub(*_adams(), clip="wide"), TypeError, "clip must be a pair"),
    (lambda: hubopt.hub(*_adams(), sigma="median"), ValueError, "unknown sigma rule 'median'"),
    (lambda: hubopt.hub(*_adams(), sigma=3), TypeError, "sigma must be a rule name"),
    (lambda: hubopt.hub(*_adams(), blocks={"w": "up"}), ValueError, "every label in blocks"),
    (lambda: hubopt.hub(optax.adam(1e-3), "velo"), TypeError, "learned must be an optax"),
    (lambda: hubopt.hub(None, optax.adam(1e-3)), TypeError, "hand must be an optax"),
    (lambda: blend(*_adams(), lam=1.5), ValueError, "lam must lie in [0, 1]"),
    (lambda: blend(*_adams(), lam="half"), TypeError, "lam must be a number"),
    (lambda: small(num_steps=0), ValueError, "num_steps"),
    (lambda: small(num_steps=-5), ValueError, "num_steps"),
    (lambda: small(num_steps=2.5), (TypeError, ValueError), "num_steps"),
    (lambda: hubopt.learned.pretrained, AttributeError, "is now hubopt.learned.small"),
    (lambda: velo(0, theta=init_velo_theta(jax.random.key(0), 8, 4)), ValueError, "num_steps"),
    (lambda: velo(-1, theta=init_velo_theta(jax.random.key(0), 8, 4)), ValueError, "num_steps"),
    (lambda: velo("ten", theta=init_velo_theta(jax.random.key(0), 8, 4)), TypeError, "num_steps"),
    (lambda: velo(10, theta=42), TypeError, "theta must be"),
    (lambda: MLPLOpt(hidden_sizes=(0,)), ValueError, "hidden_sizes must be positive"),
    (lambda: MLPLOpt(momentum_decays=(1.5,)), ValueError, "momentum_decays"),
]


@pytest.mark.parametrize(
    "build, error, phrase", BUILD_CASES, ids=[f"build-{i}" for i in range(len(BUILD_CASES))]
)
def test_bad_arguments_fail_when_the_transform_is_built(build, error, phrase):
    with pytest.raises(error) as caught:
        build()
    assert phrase in str(caught.value), str(caught.value)


def test_blocks_that_do_not_fit_the_params_fail_at_init():
    tx = hubopt.hub(*_adams(), blocks={"w": "default", "x": "inverted"})
    with pytest.raises(ValueError, match="blocks must have the params' tree structure"):
        tx.init(PARAMS)


def test_zero_size_leaves_are_not_an_error_they_get_a_zero_update():
    params = {"w": jnp.ones((3, 2)), "empty": jnp.zeros((0, 4))}
    grads = jax.tree_util.tree_map(jnp.ones_like, params)
    for key in ("hub", "hub_rank", "blend"):
        tx = TRANSFORMS[key]()
        updates, _ = tx.update(grads, tx.init(params), params, value=1.0)
        assert updates["empty"].shape == (0, 4)
        assert bool(jnp.all(jnp.isfinite(updates["w"])))


def test_the_catalogue_has_at_least_forty_cases():
    assert len(TRANSFORMS) * len(GRAD_CASES) + len(BUILD_CASES) >= 40


# ------------------------------------------------------------------ missing arguments


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
    (_small, "small", "params", "small needs the params"),
    (_small, "small", "value", "small needs the loss as value="),
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
        "hub: its learned optimizer: small needs the params",
    ),
    (
        lambda: hubopt.hub(optax.adam(1e-3), _small(), sigma="rank", mode="inverted"),
        "hub",
        "value",
        "hub: its learned optimizer: small needs the loss",
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
        "lgl2o: its learned optimizer: small needs the loss",
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
