"""The task contract, the registry and the paper's non-convex function (eq. 6)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hubopt.tasks import TASKS, Task, get_task, nonconvex, task_names

LAM = 0.01


def phi_np(t, lam=LAM):
    """NumPy reference of φ(t) = t(1 + λt + cos(1/t)), φ(0) = 0, in float64."""
    t = np.asarray(t, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        v = t * (1 + lam * t + np.cos(1 / t))
    return np.where(t > 0, v, 0.0)


def dphi_np(t, lam=LAM):
    """φ'(t) = 1 + 2λt + cos(1/t) + sin(1/t)/t, derived by hand."""
    t = np.asarray(t, np.float64)
    return 1 + 2 * lam * t + np.cos(1 / t) + np.sin(1 / t) / t


# ----------------------------------------------------------------- values


@pytest.mark.parametrize(
    "x, expected",
    [
        ([0.0, 0.0, 0.0], 0.0),
        ([1.0, 0.0, 0.0], 1.0 * (1 + 0.01 + np.cos(1.0))),  # 1.5503023...
        ([0.5, -0.5, 0.0], 1.0 * (1 + 0.01 + np.cos(1.0))),  # only ‖x‖₁ matters
        ([-2.0, 0.0, 0.0], 2.0 * (1 + 0.02 + np.cos(0.5))),
        ([1 / np.pi, 0.0, 0.0], (1 / np.pi) ** 2 * 0.01),  # cos(π) = −1: a local minimum
    ],
)
def test_value_at_hand_computed_points(x, expected):
    got = float(nonconvex.l1cos(jnp.asarray(x, jnp.float32)))
    assert got == pytest.approx(expected, rel=1e-5, abs=1e-7)


def test_value_matches_numpy_on_random_points_and_pytrees():
    rng = np.random.default_rng(0)
    for scale in (1e-4, 1e-2, 1.0, 30.0):
        a = rng.uniform(-scale, scale, 7).astype(np.float32)
        b = rng.uniform(-scale, scale, (2, 3)).astype(np.float32)
        t = np.abs(a.astype(np.float64)).sum() + np.abs(b.astype(np.float64)).sum()
        got = float(nonconvex.l1cos({"a": jnp.asarray(a), "b": jnp.asarray(b)}))
        # cos(1/t) is ill-conditioned for small t: compare against float32 rounding of t
        assert got == pytest.approx(float(phi_np(np.float32(t))), rel=2e-3, abs=1e-6)


def test_value_is_nonnegative_and_zero_only_at_zero():
    t = np.float32(np.logspace(-30, 3, 400))
    v = np.asarray(jax.vmap(nonconvex.phi)(jnp.asarray(t)))
    assert np.all(v >= 0) and np.all(np.isfinite(v))
    assert float(nonconvex.phi(jnp.float32(0.0))) == 0.0


def test_empty_tree_is_rejected():
    with pytest.raises(ValueError, match="at least one array"):
        nonconvex.l1cos({})


# ----------------------------------------------------------------- gradients


def test_numpy_derivative_matches_finite_differences():
    # check the hand-derived φ' itself before using it as the reference
    for t in (0.05, 0.3, 1.0, 7.0, 400.0):
        h = 1e-7 * t
        fd = (phi_np(t + h) - phi_np(t - h)) / (2 * h)
        assert dphi_np(t) == pytest.approx(fd, rel=1e-5)


def test_gradient_matches_numpy_reference():
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, 50).astype(np.float32)
    x[3] = 0.0
    g = np.asarray(jax.grad(nonconvex.l1cos)(jnp.asarray(x)))
    t = np.abs(x.astype(np.float64)).sum()
    expected = dphi_np(t) * np.sign(x)
    np.testing.assert_allclose(g, expected, rtol=1e-4)
    assert g[3] == 0.0  # sign(0) = 0, not jnp.abs's +1


@pytest.mark.parametrize("t", [0.0, 1e-45, 1e-39, 1e-38, 1e-30, 1e-20, 1e-10, 1e-3])
def test_gradient_is_finite_at_and_near_zero(t):
    x = jnp.zeros(5, jnp.float32).at[0].set(t)
    for fn in (jax.grad(nonconvex.l1cos), jax.jit(jax.grad(nonconvex.l1cos))):
        g = np.asarray(fn(x))
        assert np.all(np.isfinite(g)), (t, g)
        assert np.all(g[1:] == 0.0)
    if t == 0.0:
        assert np.all(np.asarray(jax.grad(nonconvex.l1cos)(x)) == 0.0)


def test_gradient_near_zero_follows_the_formula():
    # 1/t² overflows float32 here; the explicit derivative does not form it
    t = np.float32(1e-25)
    g = float(jax.grad(nonconvex.phi)(jnp.float32(t)))
    assert np.isfinite(g)
    # sin(1/t) at 1/t = 1e25 is argument-reduction noise in any precision: check the bound
    # |φ'(t)| <= 2 + 2λt + 1/t and that the 1/t term is there at all
    assert abs(g) <= 2 + 2 * LAM * t + 1 / float(t)
    assert abs(g) > 1e20


def test_second_order_autodiff_is_finite_at_zero():
    h = jax.hessian(nonconvex.l1cos)(jnp.zeros(3, jnp.float32))
    assert np.all(np.isfinite(np.asarray(h)))


# ----------------------------------------------------------------- the task


def test_registered_task_is_the_paper_setting():
    task = get_task("nonconvex_l1cos")
    assert isinstance(task, Task)
    assert task.name == "nonconvex_l1cos" and task.num_steps == 10_000
    assert not task.stochastic
    params = task.init(jax.random.key(0))
    x = np.asarray(params["x"])
    assert x.shape == (1000,) and x.dtype == np.float32
    assert np.all(np.abs(x) <= 1.0) and x.std() > 0.4  # U[-1, 1]: std 0.577
    np.testing.assert_array_equal(x, np.asarray(task.init(jax.random.key(0))["x"]))
    assert not np.array_equal(x, np.asarray(task.init(jax.random.key(1))["x"]))
    expected = phi_np(np.abs(x.astype(np.float64)).sum())
    assert float(task.loss(params, None)) == pytest.approx(float(expected), rel=1e-5)
    assert float(task.eval_loss(params)) == float(task.loss(params, None))


def test_make_task_variants_and_bad_arguments():
    small = nonconvex.make_task(dim=10, num_steps=50)
    assert small.name == "nonconvex_l1cos_d10_lam0.01" and small.num_steps == 50
    assert small.init(jax.random.key(0))["x"].shape == (10,)
    with pytest.raises(ValueError, match="dim"):
        nonconvex.make_task(dim=0)
    with pytest.raises(ValueError, match="lam"):
        nonconvex.make_task(lam=-1.0)


# ----------------------------------------------------------------- contract and registry


def test_registry_lists_and_builds_every_task():
    assert {"nonconvex_l1cos", "sine_ltc", "sine_lstm", "carracing_ltc", "carracing_lstm"} <= set(
        TASKS
    )
    assert task_names() == sorted(TASKS)
    for name in task_names():
        task = get_task(name, size="tiny")
        assert task.name == name and task.size == "tiny"


def test_sizes_change_the_budget_of_the_nonconvex_task():
    assert get_task("nonconvex_l1cos").size == "cpu"
    assert get_task("nonconvex_l1cos", size="tiny").num_steps == 200
    assert get_task("nonconvex_l1cos", size="paper").num_steps == 10_000


def test_unknown_task_or_size_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown task 'mnist_nope'.*nonconvex_l1cos"):
        get_task("mnist_nope")
    with pytest.raises(TypeError, match="task name must be a str"):
        get_task(3)
    with pytest.raises(ValueError, match="unknown task size 'huge'; sizes: tiny, cpu, paper"):
        get_task("nonconvex_l1cos", size="huge")


def test_register_task_adds_a_users_task_and_guards_names(monkeypatch):
    monkeypatch.setattr("hubopt.tasks.TASKS", dict(TASKS))
    from hubopt import tasks

    def factory(size):
        steps = {"tiny": 3, "cpu": 30, "paper": 300}[size]
        return Task("toy_quadratic", _init, _loss, steps, size=size)

    tasks.register_task("toy_quadratic", factory)
    assert tasks.get_task("toy_quadratic", "tiny").num_steps == 3
    assert "toy_quadratic" in tasks.task_names()
    with pytest.raises(ValueError, match="already registered"):
        tasks.register_task("toy_quadratic", factory)
    tasks.register_task("toy_quadratic", factory, replace=True)
    with pytest.raises(ValueError, match="<data>_<model>"):
        tasks.register_task("toy", factory)
    with pytest.raises(TypeError, match="callable"):
        tasks.register_task("toy_other", "nope")
    tasks.register_task("toy_misnamed", factory)
    with pytest.raises(RuntimeError, match="built 'toy_quadratic'"):
        tasks.get_task("toy_misnamed", "cpu")


def _loss(p, b=None):
    return jnp.sum(p["w"] ** 2)


def _init(k):
    return {"w": jnp.ones(2)}


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(name="nodatamodel"), ValueError, "<data>_<model>"),
        (dict(init="nope"), TypeError, "init must be callable"),
        (dict(loss=None), TypeError, "loss must be callable"),
        (dict(num_steps=0), ValueError, "num_steps"),
        (dict(num_steps=True), ValueError, "num_steps"),
        (dict(batch=3), TypeError, "batch must be callable"),
        (dict(metrics_fn=3), TypeError, "metrics_fn must be callable"),
        (dict(size="big"), ValueError, "size must be one of"),
        (dict(hand={"learning_rate": 1e-3}), ValueError, "hand must be a mapping"),
        (dict(hand={"name": "adam", "total_steps": 9}), ValueError, "total_steps"),
        (dict(splits=("train", "holdout")), ValueError, "splits must be"),
        (dict(splits=()), ValueError, "splits must be"),
        (dict(metric=""), ValueError, "metric"),
    ],
)
def test_task_contract_rejects_bad_fields(kwargs, error, match):
    fields = dict(name="toy_quadratic", init=_init, loss=_loss, num_steps=5)
    fields.update(kwargs)
    with pytest.raises(error, match=match):
        Task(**fields)


def test_task_is_frozen_and_eval_fn_overrides():
    task = Task("toy_quadratic", _init, _loss, 5, eval_fn=lambda p: jnp.float32(7.0))
    with pytest.raises(AttributeError):
        task.num_steps = 3
    assert float(task.eval_loss(_init(None))) == 7.0


def _metrics(p, split):
    offset = {"train": 0.0, "valid": 1.0, "test": 2.0}[split]
    return {"loss": _loss(p) + offset, "accuracy": jnp.float32(0.5)}


def test_evaluate_reads_the_split_asked_for_and_defaults_to_test():
    task = Task("toy_quadratic", _init, _loss, 5, metrics_fn=_metrics, metric="accuracy")
    params = _init(None)
    assert task.splits == ("train", "valid", "test")
    assert task.evaluate(params) == {"loss": 4.0, "accuracy": 0.5}
    assert task.evaluate(params, "valid")["loss"] == 3.0
    assert task.evaluate(params, "train")["loss"] == 2.0
    assert float(task.eval_loss(params)) == 3.0  # the validation loss
    with pytest.raises(ValueError, match="split must be one of"):
        task.evaluate(params, "holdout")
    limited = Task("toy_quadratic", _init, _loss, 5, metrics_fn=_metrics, splits=("valid",))
    with pytest.raises(ValueError, match=r"its splits \('valid',\)"):
        limited.evaluate(params, "test")
    missing = Task("toy_quadratic", _init, _loss, 5, metrics_fn=_metrics, metric="r2")
    with pytest.raises(KeyError, match="headline metric 'r2'"):
        missing.evaluate(params)


def test_jitted_is_made_once_per_task_and_key():
    traces = []

    def metrics(p, split):
        traces.append(split)  # runs once per trace
        return _metrics(p, split)

    task = Task("toy_quadratic", _init, _loss, 5, metrics_fn=metrics)
    params = _init(None)
    for _ in range(3):
        task.evaluate(params, "valid")
    task.evaluate(params, "test")
    assert traces == ["valid", "test"]  # one compile per split, however often asked
    first = task.jitted("double", lambda p: 2 * p["w"])
    assert task.jitted("double", lambda p: 3 * p["w"]) is first  # the key names the function
    np.testing.assert_array_equal(first(params), 2 * params["w"])
    # a task made from it (another budget) has its own programs
    assert task.with_budget(7).jitted("double", lambda p: 3 * p["w"]) is not first


def test_a_stochastic_task_without_metrics_has_only_a_valid_split():
    task = Task("toy_quadratic", _init, _loss, 5, batch=lambda k, s: None)
    assert task.splits == ("valid",)
    deterministic = Task("toy_quadratic", _init, _loss, 5)
    assert deterministic.splits == ("train", "valid", "test")
    assert deterministic.evaluate(_init(None)) == {"loss": 2.0}


def test_hand_preset_lays_the_schedule_over_the_budget():
    hand = {"name": "adam", "learning_rate": 0.1, "schedule": "warmup_cosine", "warmup_steps": 2}
    task = Task("toy_quadratic", _init, _loss, 10, hand=hand)
    params = {"w": jnp.zeros(())}
    grads = {"w": jnp.ones(())}

    def first_updates(tx, n):
        state, out = tx.init(params), []
        for _ in range(n):
            u, state = tx.update(grads, state, params)
            out.append(float(u["w"]))
        return out

    # warm-up: the first step has learning rate 0, the third the peak 0.1
    u = first_updates(task.hand_preset(), 3)
    assert u[0] == 0.0 and u[2] == pytest.approx(-0.1, rel=1e-4)
    # a longer run stretches the cosine: step 9 of 10 is near 0, of 100 near the peak
    assert abs(first_updates(task.hand_preset(), 10)[-1]) < 0.01
    assert abs(first_updates(task.hand_preset(num_steps=100), 10)[-1]) > 0.09
    with pytest.raises(ValueError, match="num_steps must be a positive int"):
        task.hand_preset(num_steps=0)


def test_with_budget_lays_the_presets_schedule_over_the_new_budget():
    task = get_task("fmnist_mlp", "tiny")
    assert task.hand["warmup_steps"] == task.num_steps // 10 > 0
    longer = task.with_budget(task.num_steps * 4)
    assert longer.num_steps == task.num_steps * 4 and longer.name == task.name
    assert longer.hand["warmup_steps"] == 4 * task.hand["warmup_steps"]
    assert longer.hand["learning_rate"] == task.hand["learning_rate"]
    assert task.with_budget(task.num_steps) is task
    step_decay = {"name": "adam", "learning_rate": 1e-2, "schedule": "step", "decay_every": 4}
    toy = Task(
        name="toy_quadratic",
        init=lambda key: jnp.zeros(2),
        loss=lambda p, b: jnp.sum(p**2),
        num_steps=40,
        hand=step_decay,
    )
    assert toy.with_budget(100).hand["decay_every"] == 10
    assert toy.with_budget(4).hand["decay_every"] == 1  # round(0.4) = 0: never 0
    with pytest.raises(ValueError, match="num_steps must be a positive int"):
        task.with_budget(0)


def test_with_loss_scale_scales_what_the_optimizer_sees_and_nothing_else():
    task = get_task("sine_lstm", "tiny")
    scaled = task.with_loss_scale(1e3)
    assert scaled.name == "sine_lstm_x1000" and task.with_loss_scale(1) is task
    params = task.init(jax.random.key(0))
    batch = task.batch(jax.random.key(1), 0)
    np.testing.assert_allclose(
        scaled.loss(params, batch), 1e3 * task.loss(params, batch), rtol=1e-6
    )
    assert scaled.evaluate(params, "valid") == task.evaluate(params, "valid")
    assert float(scaled.eval_loss(params)) == float(task.eval_loss(params))
    quad = nonconvex.make_task(dim=3, num_steps=5)  # deterministic, no metrics_fn
    x = quad.init(jax.random.key(0))
    assert float(quad.with_loss_scale(1e-3).eval_loss(x)) == float(quad.eval_loss(x))
    with pytest.raises(ValueError, match="loss scale must be a positive number"):
        task.with_loss_scale(0)
