"""ES and PES meta-gradient estimators against analytic gradients and finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hubopt.learned.meta import task_distribution as td
from hubopt.learned.meta.estimators import PES, Unroll, es_gradient
from hubopt.learned.small_lopt.architecture import MLPLOpt


def _flat(tree):
    return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree_util.tree_leaves(tree)])


def test_es_mean_matches_quadratic_gradient():
    a = jnp.asarray([0.5, 1.0, 2.0, 3.0, 0.1], jnp.float32)
    c = jnp.asarray([1.0, -1.0, 0.5, 0.0, 2.0], jnp.float32)
    theta = {"x": jnp.asarray([0.3, 0.2, -0.4, 1.0, 0.0], jnp.float32)}
    f = lambda th, k: jnp.sum(a * (th["x"] - c) ** 2)  # noqa: E731
    true = np.asarray(2 * a * (theta["x"] - c))

    est = jax.jit(jax.vmap(lambda k: es_gradient(f, theta, k, num_pairs=16, sigma=0.1)[0]["x"]))(
        jax.random.split(jax.random.PRNGKey(0), 400)
    )
    est = np.asarray(est)
    mean, se = est.mean(0), est.std(0) / np.sqrt(est.shape[0])
    assert np.all(np.abs(mean - true) < 4 * se + 1e-6), (mean, true, se)
    assert np.all(se < 0.2 * np.abs(true).max())  # the check has power


def test_es_penalises_nan_and_validates():
    theta = {"x": jnp.zeros((3,), jnp.float32)}
    f = lambda th, k: jnp.where(th["x"][0] > 0, jnp.nan, jnp.sum(th["x"] ** 2))  # noqa: E731
    g, m = es_gradient(f, theta, jax.random.PRNGKey(1), num_pairs=8, sigma=0.1, penalty=50.0)
    assert np.isfinite(_flat(g)).all() and np.isfinite(float(m))
    assert float(m) > 10.0  # half the evaluations hit the penalty
    with pytest.raises(ValueError, match="sigma"):
        es_gradient(f, theta, jax.random.PRNGKey(1), num_pairs=8, sigma=0.0)
    with pytest.raises(ValueError, match="normalize"):
        es_gradient(f, theta, jax.random.PRNGKey(1), num_pairs=8, sigma=0.1, normalize="rank")


def _tiny_setup(**lopt_kw):
    lo = MLPLOpt(hidden_sizes=(4,), **lopt_kw)
    theta = lo.init(jax.random.PRNGKey(3))
    theta["layer1"]["w"] = jax.random.normal(jax.random.PRNGKey(4), (4, 2), jnp.float32) * 0.5
    theta["layer1"]["b"] = jnp.asarray([0.2, -0.3], jnp.float32)
    unroll = Unroll(td.TINY_TASKS[1], lo, trunc_len=5, horizons=(15,), eval_weight=0.5)
    return lo, theta, unroll


def _fd_pes(unroll):
    """One compiled PES step shared by the tests below (compiling dominates their time)."""
    from hubopt.learned.meta.train import _jitted

    pes = PES(unroll, num_pairs=2048, sigma=0.01, persistent=True, normalize=None)
    return pes, _jitted(pes)[1]


def test_pes_matches_finite_differences_of_full_unroll():
    _, theta, unroll = _tiny_setup()
    base = {}
    key = jax.random.PRNGKey(7)
    pes, step = _fd_pes(unroll)
    states = pes.init(theta, key, base, same_instance=True)
    total = jax.tree_util.tree_map(jnp.zeros_like, theta)
    for i in range(3):  # the three truncations of one run
        g, states, m = step(theta, states, jax.random.PRNGKey(100 + i), base)
        total = jax.tree_util.tree_map(jnp.add, total, g)
        assert float(m["diverged"]) == 0.0
    assert float(m["done"]) == 1.0  # the run ended and particles restarted
    pes_g = _flat(total)

    obj = jax.jit(lambda th: unroll.full_objective(th, key, base))
    flat0, unravel = jax.flatten_util.ravel_pytree(theta)
    h = 1e-2
    basis = jnp.eye(flat0.shape[0], dtype=jnp.float32)
    fd = jax.vmap(lambda e: (obj(unravel(flat0 + h * e)) - obj(unravel(flat0 - h * e))) / (2 * h))(
        basis
    )
    fd = np.asarray(fd)
    cos = pes_g @ fd / (np.linalg.norm(pes_g) * np.linalg.norm(fd))
    assert cos > 0.9, cos
    assert 0.7 < np.linalg.norm(pes_g) / np.linalg.norm(fd) < 1.3


def test_diverging_inner_run_costs_finite_penalty():
    _, theta, unroll = _tiny_setup()
    # a θ whose direction output is NaN: every update is NaN, the inner run diverges
    bad = jax.tree_util.tree_map(jnp.asarray, theta)
    bad["layer1"]["b"] = jnp.asarray([jnp.nan, 0.0], jnp.float32)
    pes, step = _fd_pes(unroll)
    states = pes.init(theta, jax.random.PRNGKey(0), {})
    cap = np.asarray(states.log_loss0) + unroll.margin
    g, new, m = step(bad, states, jax.random.PRNGKey(1), {})
    # NaN θ entries aside, the estimate is finite (the NaN was in θ, not the losses)
    assert np.isfinite(float(m["meta_loss"]))
    # after the first step (taken from finite params) every step and the held-out term pay
    # the cap: L = (ℓ_first + 4 cap)/5 + 0.5 cap, with ℓ_first ≈ log loss0 = cap − margin
    full = float(np.mean(cap)) * 1.5
    assert full - 0.2 * unroll.margin - 0.3 < float(m["meta_loss"]) <= full + 1e-4
    assert float(m["diverged"]) == 1.0
    # diverged particles restart from finite parameters at step 0
    assert np.isfinite(_flat(new.params_pos)).all() and np.isfinite(_flat(new.params_neg)).all()
    assert np.all(np.asarray(new.step) == 0)
    assert np.isfinite(_flat(g)).all()


def test_pes_trains_inside_hub_and_validates():
    _, theta, _ = _tiny_setup()
    lo = MLPLOpt(hidden_sizes=(4,))
    unroll = Unroll(td.TINY_TASKS[0], lo, trunc_len=5, horizons=(10,), hub_hand="adam")
    pes = PES(unroll, num_pairs=2)
    states = pes.init(theta, jax.random.PRNGKey(0), {})
    g, _, m = jax.jit(pes.step)(theta, states, jax.random.PRNGKey(1), {})
    assert np.isfinite(_flat(g)).all() and np.abs(_flat(g)).sum() > 0
    with pytest.raises(ValueError, match="horizons"):
        Unroll(td.TINY_TASKS[0], lo, trunc_len=5, horizons=(12,))
    with pytest.raises(ValueError):
        Unroll(td.TINY_TASKS[0], lo, hub_hand="no_such_optimizer")


def test_truncation_loss_is_clamped():
    _, _, unroll = _tiny_setup()
    cap = jnp.float32(1.0)  # = log loss0 + margin, margin 2, floor 6.9
    got = np.asarray(
        unroll._safe_log(jnp.asarray([jnp.nan, jnp.inf, 1e9, 1.0, 1e-9, 0.0], jnp.float32), cap)
    )
    np.testing.assert_allclose(
        got, [1.0, 1.0, 1.0, 0.0, 1.0 - 2.0 - 6.9, 1.0 - 2.0 - 6.9], rtol=1e-6
    )
