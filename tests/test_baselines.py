"""LGL2O, fixed blend and hand-designed presets, against hand-computed references."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hubopt
from hubopt.baselines import blend, hand_optimizer, learning_rate_schedule, lgl2o, lgl2o_stats
from hubopt.baselines import preset as make_preset

TARGET = jnp.array([1.0, -2.0])


def parabola(p):
    return jnp.sum((p["x"] - TARGET) ** 2)


def counting_sgd(lr):
    """SGD whose state counts its updates, to check that a member advanced."""
    return optax.chain(optax.scale_by_schedule(lambda count: jnp.ones(())), optax.sgd(lr))


def member_count(member_state):
    return int(member_state[0].count)


# --- LGL2O ---------------------------------------------------------------------


@pytest.mark.parametrize("learned_lr, learned_should_win", [(0.3, True), (-0.1, False)])
def test_lgl2o_applies_the_lower_loss_candidate(learned_lr, learned_should_win):
    params = {"x": jnp.zeros(2)}
    grads = jax.grad(parabola)(params)
    tx = lgl2o(counting_sgd(0.05), counting_sgd(learned_lr))
    state = tx.init(params)
    updates, state = tx.update(grads, state, params, value_fn=parabola)
    u_hand, u_learned = -0.05 * grads["x"], -learned_lr * grads["x"]
    loss_hand = float(np.sum((np.asarray(u_hand) - TARGET) ** 2))
    loss_learned = float(np.sum((np.asarray(u_learned) - TARGET) ** 2))
    assert (loss_learned < loss_hand) == learned_should_win
    np.testing.assert_allclose(updates["x"], u_learned if learned_should_win else u_hand, rtol=1e-6)
    assert member_count(state.members.hand) == 1 and member_count(state.members.learned) == 1
    assert lgl2o_stats(state) == {
        "steps": 1,
        "learned_win_fraction": float(learned_should_win),
        "last_learned_won": learned_should_win,
    }


def test_lgl2o_never_takes_a_nan_candidate_and_ties_go_to_hand():
    params = {"x": jnp.zeros(2)}
    grads = jax.grad(parabola)(params)
    nan_learned = optax.stateless(
        lambda u, p: jax.tree_util.tree_map(lambda x: jnp.full_like(x, jnp.nan), u)
    )
    tx = lgl2o(optax.sgd(0.1), nan_learned)
    updates, state = tx.update(grads, tx.init(params), params, value_fn=parabola)
    assert np.all(np.isfinite(updates["x"]))
    assert not lgl2o_stats(state)["last_learned_won"]
    tx = lgl2o(optax.sgd(0.1), optax.sgd(0.1))
    _, state = tx.update(grads, tx.init(params), params, value_fn=parabola)
    assert not lgl2o_stats(state)["last_learned_won"]


def test_lgl2o_win_fraction_over_a_jitted_run():
    """Learned = SGD(0.4) shrinks the error 5x a step, hand = SGD(0.01) 1.02x: learned always wins.

    Eight steps keep the error (2·0.2^8 ≈ 5e-6) far above float32 rounding, where
    the two candidates' losses would tie and ties go to the hand optimizer."""
    params = {"x": jnp.zeros(2)}
    tx = lgl2o(optax.sgd(0.01), optax.sgd(0.4))
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        grads = jax.grad(parabola)(params)
        updates, state = tx.update(grads, state, params, value_fn=parabola)
        return optax.apply_updates(params, updates), state

    for _ in range(8):
        params, state = step(params, state)
    stats = lgl2o_stats(state)
    assert stats["steps"] == 8
    assert stats["learned_win_fraction"] == 1.0
    np.testing.assert_allclose(float(parabola(params)), 5 * 0.2**16, rtol=1e-2)


def test_lgl2o_errors():
    params = {"x": jnp.zeros(2)}
    grads = jax.grad(parabola)(params)
    tx = lgl2o(optax.sgd(0.1), optax.sgd(0.2))
    state = tx.init(params)
    with pytest.raises(TypeError, match="value_fn"):
        tx.update(grads, state, params)
    with pytest.raises(TypeError, match="params"):
        tx.update(grads, state, None, value_fn=parabola)
    with pytest.raises(ValueError, match="scalar"):
        tx.update(grads, state, params, value_fn=lambda p: p["x"])
    with pytest.raises(ValueError, match="exactly one LGL2OState"):
        lgl2o_stats(state.members)


# --- blend -----------------------------------------------------------------------


@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0])
def test_blend_is_the_fixed_convex_combination(lam):
    params = {"x": jnp.array([0.5, 1.5]), "y": jnp.ones((2, 2))}
    grads = jax.tree_util.tree_map(lambda p: 2 * p + 1, params)
    tx = blend(optax.sgd(0.1), optax.sgd(0.7), lam)
    updates, _ = tx.update(grads, tx.init(params), params)
    for u, g in zip(
        jax.tree_util.tree_leaves(updates), jax.tree_util.tree_leaves(grads), strict=True
    ):
        np.testing.assert_allclose(u, -(lam * 0.1 + (1 - lam) * 0.7) * np.asarray(g), rtol=1e-6)


def test_blend_rejects_bad_lambda():
    with pytest.raises(ValueError, match="lam"):
        blend(optax.sgd(0.1), optax.sgd(0.1), 1.5)
    with pytest.raises(TypeError, match="lam"):
        blend(optax.sgd(0.1), optax.sgd(0.1), "half")


def test_blend_equals_hub_when_sigma_is_clamped_to_a_constant():
    params = {"x": jnp.linspace(-1.0, 1.0, 6)}
    grads = {"x": jnp.linspace(2.0, -3.0, 6)}
    a, _ = blend(optax.sgd(0.1), optax.adam(0.1), 0.25).update(
        grads, blend(optax.sgd(0.1), optax.adam(0.1), 0.25).init(params), params
    )
    tx = hubopt.hub(optax.sgd(0.1), optax.adam(0.1), clip=(0.25, 0.25))
    b, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(a["x"], b["x"], rtol=1e-6)


# --- presets -----------------------------------------------------------------------


def test_warmup_cosine_schedule_matches_formula():
    lr, total, warm = 1e-2, 100, 10
    sched = learning_rate_schedule(lr, "warmup_cosine", total_steps=total, warmup_steps=warm)
    for t in [0, 5, 10, 40, 99]:
        want = (
            lr * t / warm
            if t < warm
            else lr * 0.5 * (1 + math.cos(math.pi * (t - warm) / (total - warm)))
        )
        np.testing.assert_allclose(float(sched(t)), want, rtol=1e-5, atol=1e-9)


def test_step_schedule_matches_formula():
    sched = learning_rate_schedule(1e-2, "step", decay_every=30, decay_factor=0.5)
    for t in [0, 29, 30, 61, 95]:
        np.testing.assert_allclose(float(sched(t)), 1e-2 * 0.5 ** (t // 30), rtol=1e-6)


@pytest.mark.parametrize("name", ["adam", "adamax", "adamw"])
def test_hand_optimizer_matches_optax(name):
    params = {"x": jnp.array([1.0, -2.0, 3.0])}
    grads = {"x": jnp.array([0.1, 0.2, -0.3])}
    ours = hand_optimizer(name, 1e-2)
    ref = {
        "adam": optax.adam(1e-2),
        "adamax": optax.adamax(1e-2),
        "adamw": optax.adamw(1e-2, weight_decay=1e-4),
    }[name]
    a, _ = ours.update(grads, ours.init(params), params, value=1.0)
    b, _ = ref.update(grads, ref.init(params), params)
    np.testing.assert_allclose(a["x"], b["x"], rtol=1e-6)


@pytest.mark.parametrize(
    "name", ["adam", "adamax", "adamw", "adam_warmup_cosine", "adamw_warmup_cosine", "adamax_step"]
)
def test_every_preset_descends_a_parabola(name):
    tx = make_preset(name, total_steps=300)
    params = {"x": jnp.zeros(2)}
    state = tx.init(params)
    step = jax.jit(lambda p, s: tx.update(jax.grad(parabola)(p), s, p))
    for _ in range(300):
        updates, state = step(params, state)
        params = optax.apply_updates(params, updates)
    assert float(parabola(params)) < float(parabola({"x": jnp.zeros(2)}))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: hand_optimizer("sgd"), "name"),
        (lambda: hand_optimizer("adam", -1.0), "learning_rate"),
        (lambda: hand_optimizer("adam", weight_decay=0.1), "weight_decay"),
        (lambda: hand_optimizer("adam", schedule="linear"), "schedule"),
        (lambda: hand_optimizer("adam", schedule="warmup_cosine"), "total_steps"),
        (lambda: hand_optimizer("adam", schedule="step"), "decay_every"),
        (lambda: make_preset("adam_warmup_cosine"), "total_steps"),
        (lambda: make_preset("rmsprop"), "unknown preset"),
    ],
)
def test_preset_errors_name_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()
