"""The bundled learned optimizer: loads offline, has its provenance, clear errors."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hubopt
from hubopt.learned.small_lopt import bundled as pre
from hubopt.learned.small_lopt.architecture import MLPLOpt

needs_bundle = pytest.mark.skipif("small" not in pre.available(), reason="no bundled 'small'")


def test_unknown_name_is_a_clear_error():
    with pytest.raises(ValueError, match="no bundled learned optimizer named 'nope'"):
        pre.load("nope")
    with pytest.raises(ValueError, match="num_steps"):
        pre.small(num_steps=0)


@needs_bundle
def test_bundled_small_loads_and_trains_inside_hub():
    prov = pre.provenance("small")
    for field in ("command", "seed", "git_hash", "wall_s", "meta_loss", "lopt"):
        assert field in prov, field
    lopt, theta = pre.load("small")
    assert isinstance(lopt, MLPLOpt)
    # meta-training moved it away from the initial θ
    theta0 = lopt.init(jax.random.PRNGKey(0))
    assert not np.allclose(np.asarray(theta["layer1"]["w"]), np.asarray(theta0["layer1"]["w"]))

    params = {"w": jnp.full((3, 2), 0.5, jnp.float32), "b": jnp.zeros((2,), jnp.float32)}
    x = jnp.asarray([[1.0, 2.0, -1.0], [0.5, -0.3, 0.2]], jnp.float32)

    def loss(p):
        return jnp.mean((x @ p["w"] + p["b"][None, :] - 1.0) ** 2)

    def final_loss(tx):
        p, s = params, tx.init(params)
        for _ in range(50):
            v, g = jax.value_and_grad(loss)(p)
            u, s = tx.update(g, s, p, value=v)
            p = optax.apply_updates(p, u)
        return float(loss(p))

    # Adam(1e-3), HUB's hand member, only gets from 0.32 to about 0.25 in 50 steps
    adam = final_loss(optax.adam(1e-3))
    for tx in (
        pre.small(num_steps=50),
        hubopt.hub(optax.adam(1e-3), pre.small(num_steps=50)),
    ):
        got = final_loss(tx)
        assert got < 0.6 * float(loss(params)) and got < 0.8 * adam, (got, adam)


@needs_bundle
def test_bundled_recipe_is_the_defaults_but_for_its_retired_mnist_task():
    """The shipped θ (third generation) was meta-trained on an MNIST-14 MLP, and MNIST
    is test data now: its recipe can no longer run as it was (meta-training refuses
    test data). Apart from that task, `hubopt meta-train`'s defaults are its recipe and
    its provenance's command parses to it. (The next bundled θ must be the defaults.)"""
    import dataclasses
    import shlex

    from hubopt.bench.cli import build_parser
    from hubopt.learned.meta import task_distribution as td
    from hubopt.learned.meta.train import MetaTrainConfig

    prov = pre.provenance("small")
    with pytest.raises(ValueError, match="mnist14_mlp32relub32 reads mnist data, whose role"):
        MetaTrainConfig.from_json(prov["config"])
    retired = {t.name for t in td.RETIRED_TASKS}
    tasks = [t for t in prov["config"]["tasks"] if t not in retired]
    assert len(tasks) == len(prov["config"]["tasks"]) - 1
    config = MetaTrainConfig.from_json({**prov["config"], "tasks": tasks})
    assert config == MetaTrainConfig(outer_steps=config.outer_steps)
    args = build_parser("meta-train").parse_args(shlex.split(prov["command"])[1:])
    for field in dataclasses.fields(MetaTrainConfig):  # what `hubopt meta-train` would run
        if field.name != "tasks":
            assert getattr(args, field.name) == getattr(config, field.name), field.name
    assert config.outer_steps == prov["outer_steps"]


def test_the_bundled_optimizer_names_itself_and_warns_once_past_its_budget():
    import warnings

    import hubopt.learned

    tx = hubopt.learned.small(num_steps=3)
    params = {"w": jnp.ones(3)}
    state = tx.init(params)
    with pytest.raises(TypeError, match="small needs the loss"):
        tx.update(params, state, params)
    with pytest.raises(TypeError, match="small needs the params"):
        tx.update(params, state, value=1.0)
    update = jax.jit(lambda g, s, p: tx.update(g, s, p, value=1.0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):  # within the budget: silent
            _, state = update(params, state, params)
        jax.effects_barrier()
        assert not caught
        for _ in range(3):  # steps 4, 5, 6: one warning, at step 4
            _, state = update(params, state, params)
        jax.effects_barrier()
    assert [str(w.message)[:35] for w in caught] == ["small is running past its num_steps"]


def _step(tx, params):
    x = jnp.linspace(-1.0, 1.0, 6, dtype=jnp.float32).reshape(2, 3)

    def loss(p):
        return jnp.mean((x @ p["w"] - 1.0) ** 2)

    p, s = params, tx.init(params)
    for _ in range(3):
        v, g = jax.value_and_grad(loss)(p)
        u, s = tx.update(g, s, p, value=v)
        p = optax.apply_updates(p, u)
    return p["w"]


@needs_bundle
def test_a_theta_file_is_the_optimizer_its_theta_makes(tmp_path):
    # the bundled θ read as a plain file is the bundled optimizer, step for step
    params = {"w": jnp.full((3, 2), 0.5, jnp.float32)}
    from_file = pre.from_theta_file(pre.WEIGHTS_DIR / "small.msgpack", num_steps=10)
    bundled = pre.small(num_steps=10)
    np.testing.assert_array_equal(_step(from_file, params), _step(bundled, params))
    # another architecture: the hidden widths come from the file's shapes
    lopt = MLPLOpt(hidden_sizes=(8, 4))
    theta = jax.tree_util.tree_map(lambda a: a + 0.1, lopt.init(jax.random.PRNGKey(1)))
    path = hubopt.learned.write_checkpoint(tmp_path / "theta.msgpack", theta)
    got, got_theta = pre.load_theta_file(path)
    assert got == lopt
    direct = lopt.optimizer(theta, 10)
    np.testing.assert_array_equal(
        _step(pre.from_theta_file(path, num_steps=10), params), _step(direct, params)
    )


def test_a_file_that_is_not_a_theta_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        pre.load_theta_file(tmp_path / "missing.msgpack")
    foreign = hubopt.learned.write_checkpoint(tmp_path / "f.msgpack", {"dense": {"w": np.ones(2)}})
    with pytest.raises(ValueError, match="not an MLPLOpt θ: its top-level keys are"):
        pre.load_theta_file(foreign)
    lopt = MLPLOpt(hidden_sizes=(4,))
    theta = lopt.init(jax.random.PRNGKey(0))
    theta["layer0"] = {"w": np.ones((3, 4), np.float32), "b": np.zeros(4, np.float32)}
    wrong = hubopt.learned.write_checkpoint(tmp_path / "w.msgpack", theta)
    with pytest.raises(ValueError, match="does not fit MLPLOpt's features"):
        pre.load_theta_file(wrong)
    with pytest.raises(ValueError, match="num_steps"):
        pre.from_theta_file(wrong, num_steps=0)
