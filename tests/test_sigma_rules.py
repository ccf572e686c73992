"""σ rules (hubopt._src.sigma_rules): the properties each rule claims, against NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import hubopt
from hubopt._src.sigma_rules import (
    HYPER_BOUND,
    HYPER_MEMORY,
    HYPER_STEP,
    SHARE_FLOOR,
    SIGMA_RULES,
)

STATELESS = [name for name, rule in SIGMA_RULES.items() if not rule.stateful]
HYPER = ["hyper", "hyper_ema", "hyper_share", "hyper_floor"]  # hypergradient descent on λ
BY_UPDATES = [name for name, rule in SIGMA_RULES.items() if rule.uses_updates]
SCALE_FREE = [name for name in STATELESS if SIGMA_RULES[name].scale_free]
# entries 0 or of magnitude 1e-20 … 1e3, so that a scale of 1e-3 never underflows
# (XLA flushes subnormals to zero, which would make ties the rule never saw)
MAGNITUDES = st.one_of(
    st.just(0.0),
    st.floats(float(np.float32(1e-20)), 1e3, width=32),
    st.floats(-1e3, -float(np.float32(1e-20)), width=32),
)
GRADS = hnp.arrays(
    np.float32,
    hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=7),
    elements=MAGNITUDES,
)


def weights(name, g):
    return np.asarray(SIGMA_RULES[name].weights(jnp.asarray(g), None)[0], np.float64)


@pytest.mark.parametrize("name", STATELESS)
@settings(max_examples=20, deadline=None)
@given(g=GRADS)
def test_weights_lie_in_the_unit_interval_with_the_gradients_shape(name, g):
    w = weights(name, g)
    assert w.shape == g.shape and np.all((w >= 0) & (w <= 1))


@pytest.mark.parametrize("name", SCALE_FREE)
@settings(max_examples=20, deadline=None)
@given(g=GRADS, c=st.sampled_from([1e-3, 0.5, 7.0, 1e3]))
def test_scale_free_rules_ignore_the_gradients_scale(name, g, c):
    np.testing.assert_allclose(weights(name, c * g), weights(name, g), rtol=2e-4, atol=2e-6)


@pytest.mark.parametrize("name", [n for n in STATELESS if SIGMA_RULES[n].monotone])
@settings(max_examples=20, deadline=None)
@given(g=GRADS)
def test_monotone_rules_never_give_a_larger_abs_gradient_a_smaller_weight(name, g):
    a, w = np.abs(g).ravel(), weights(name, g).ravel()
    order = np.argsort(a, kind="stable")
    assert np.all(np.diff(w[order]) >= -1e-6)


def test_rank_rule_by_hand():
    # |g| = 3, 1, 1, 0: ranks 3, (1 + 2)/2, (1 + 2)/2, 0 over n − 1 = 3
    np.testing.assert_allclose(weights("rank", [3.0, -1.0, 1.0, 0.0]), [1, 0.5, 0.5, 0])
    assert weights("rank", [5.0]).tolist() == [0.5]
    np.testing.assert_allclose(weights("rank", np.zeros(6)), 0.5)


def test_lognormal_rule_by_hand_and_near_rank():
    g = np.array([0.0, 1.0, -np.e, np.e**2, 0.0, np.e**-1])  # log|g| = -, 0, 1, 2, -, -1
    z = np.array([0.0, 1.0, 2.0, -1.0])
    x = (z - z.mean()) / z.std()
    p0 = 2 / 6
    want = np.zeros(6)
    want[[1, 2, 3, 5]] = p0 + (1 - p0) / (1 + np.exp(-1.702 * x))
    want[[0, 4]] = p0 / 2  # the mid-rank of the tie at 0
    np.testing.assert_allclose(weights("lognormal", g), want, rtol=1e-5)
    np.testing.assert_allclose(weights("lognormal", np.zeros(4)), 0.5)
    normal = np.random.default_rng(3).normal(size=10**4)
    assert np.mean(np.abs(weights("lognormal", normal) - weights("rank", normal))) < 0.06


def test_sigmoid_and_rescaled_softmax_by_hand():
    g = np.array([1.0, -2.0, 0.5, 4.0])
    r = np.abs(g) / np.mean(np.abs(g))
    np.testing.assert_allclose(weights("sigmoid", g), 1 / (1 + np.exp(-4 * (r - 1))), rtol=1e-5)
    e = np.exp(np.minimum(r, 2.0))
    np.testing.assert_allclose(
        weights("softmax_n", g), np.minimum(1, 0.5 * e / e.mean()), rtol=1e-5
    )
    for name in ("sigmoid", "softmax_n"):  # a zero gradient: ½ everywhere
        np.testing.assert_allclose(weights(name, np.zeros(5)), 0.5)


@pytest.mark.parametrize("name", [n for n in STATELESS if SIGMA_RULES[n].width_free])
def test_the_mean_weight_does_not_move_with_the_width(name):
    """i.i.d. heavy-tailed gradients (Student's t, 4 degrees of freedom): the mean
    weight of 2,000 tensors of 10 entries against that of one of 10⁶, within 5%; the
    paper's softmax falls as 1/n."""
    rng = np.random.default_rng(0)
    narrow = np.mean(
        jax.vmap(lambda g: SIGMA_RULES[name].weights(g, None)[0])(
            jnp.asarray(rng.standard_t(4, (2_000, 10)), jnp.float32)
        )
    )
    wide = np.mean(weights(name, rng.standard_t(4, 10**6).astype(np.float32)))
    assert abs(wide - narrow) <= 0.05 * narrow, (narrow, wide)
    assert np.mean(weights("softmax", rng.normal(size=10**4))) == pytest.approx(1e-4, rel=1e-3)


def _quadratic_run(rule, hand, learned, steps=60):
    """HUB on f(x) = ½‖x‖² from x = 1 (100 entries); returns the final loss and state."""
    tx = hubopt.hub(hand, learned, sigma=rule)
    x = jnp.ones(100)
    state = tx.init(x)
    for _ in range(steps):
        g = x
        u, state = tx.update(g, state, x)
        x = x + u
    return float(0.5 * jnp.sum(x**2)), state


@pytest.mark.parametrize("rule", HYPER)
def test_hyper_moves_weight_to_the_member_that_lowers_the_loss(rule):
    good, useless = optax.sgd(0.2), optax.sgd(0.0)
    # default mode: σ weighs the hand member
    loss_good_hand, state = _quadratic_run(rule, good, useless)
    logit = float(state.rule_state.logit)
    assert logit > 1.0, logit  # σ → the good hand member
    loss_good_learned, state = _quadratic_run(rule, useless, good)
    assert float(state.rule_state.logit) < -1.0  # σ → away from the useless hand member
    assert abs(float(state.rule_state.logit)) <= HYPER_BOUND
    # both beat the fixed half-half blend of the same members (rank gives ½ on equal |g|)
    half, _ = _quadratic_run("rank", good, useless)
    assert loss_good_hand < half and loss_good_learned < half


@pytest.mark.parametrize("rule", HYPER)
def test_hyper_is_free_of_the_losss_scale(rule):
    """With members whose steps ignore the gradient's scale (sign descent, and a member
    that stands still), the cosine makes λ's path, and so the run, the same for a loss
    scaled by 10⁻³ or 10³."""
    sign_descent = optax.chain(optax.scale_by_sign(), optax.scale(-0.05))
    still = optax.scale(0.0)
    tx = hubopt.hub(sign_descent, still, sigma=rule)
    runs = []
    for scale in (1e-3, 1.0, 1e3):
        x = jnp.linspace(-1, 1, 50)
        state = tx.init(x)
        for _ in range(25):
            u, state = tx.update(scale * x, state, x)  # the gradient of scale · ½‖x‖²
            x = x + u
        runs.append((float(state.rule_state.logit), np.asarray(x)))
    for logit, x in runs[1:]:
        assert logit == pytest.approx(runs[0][0], rel=1e-5)
        np.testing.assert_allclose(x, runs[0][1], rtol=1e-5, atol=1e-7)
    assert runs[0][0] > 0  # and it leans to the member that moves


@pytest.mark.parametrize("rule", [r for r in HYPER if r != "hyper_floor"])  # floors σ's side
def test_hyper_in_inverted_mode_is_default_mode_up_to_rounding(rule):
    """`hyper` weighs whichever member σ stands for by the same hypergradient: in inverted
    mode λ is the default mode's −λ, so the hand member's weight, sigmoid(λ) or
    1 − sigmoid(−λ), and the run are the same up to float rounding (the σ study runs both
    modes: two replicates, not two rules)."""
    hand, learned = optax.adam(0.05), optax.sgd(0.01)  # the hand member is the faster
    rng = np.random.default_rng(3)
    target = jnp.asarray(rng.normal(size=(6, 5)), jnp.float32)
    runs = []
    for mode in ("default", "inverted"):
        tx = hubopt.hub(hand, learned, sigma=rule, mode=mode)
        x = jnp.zeros((6, 5))
        state = tx.init(x)
        for _ in range(25):  # λ ≈ ±2.7: moving, not at its bound
            u, state = tx.update(x - target + 0.1 * jnp.sin(3.0 * x), state, x)
            x = x + u
        runs.append((float(state.rule_state.logit), np.asarray(x)))
    (logit_default, x_default), (logit_inverted, x_inverted) = runs
    assert 0.5 < abs(logit_default) < HYPER_BOUND - 0.5  # λ moves, and is not at its bound
    if rule != "hyper_share":  # to the member whose steps lower the loss more: Adam's
        assert logit_default > 0  # (hyper_share compares their directions at equal size)
    assert logit_inverted == pytest.approx(-logit_default, rel=1e-4, abs=1e-5)
    np.testing.assert_allclose(x_inverted, x_default, rtol=1e-4, atol=1e-6)


def _hyper_logit_by_hand(logit: float, g: np.ndarray, d: np.ndarray) -> float:
    """λ ← clip(λ − β cos(g, d), ±bound), cos = 0 where d is 0."""
    cos = g @ d / (np.linalg.norm(g) * np.linalg.norm(d) or 1.0)
    return float(np.clip(logit - HYPER_STEP * cos, -HYPER_BOUND, HYPER_BOUND))


def test_hyper_ema_sums_the_past_differences_by_hand():
    """Three steps of HUB(sgd(1.0), sgd(0.5)) with `hyper_ema`, against the rule computed
    here: D₁ = d₁, D₂ = ρ D₁ + d₂, and λ₃ = λ₂ − β cos(g₃, D₂), d = σ-side − other update."""
    rng = np.random.default_rng(5)
    grads = [jnp.asarray(rng.normal(size=7), jnp.float32) for _ in range(3)]
    tx = hubopt.hub(optax.sgd(1.0), optax.sgd(0.5), sigma="hyper_ema")
    state = tx.init(grads[0])
    logit, memory = 0.0, np.zeros(7)
    for g in grads:
        g64 = np.asarray(g, np.float64)
        logit = _hyper_logit_by_hand(logit, g64, memory)
        memory = HYPER_MEMORY * memory + (-1.0 * g64 - (-0.5 * g64))  # sgd(1.0) − sgd(0.5)
        _, state = tx.update(g, state, g)
        assert float(state.rule_state.logit) == pytest.approx(logit, abs=1e-6)
        np.testing.assert_allclose(np.asarray(state.rule_state.diff), memory, rtol=1e-5)
    assert logit != 0.0  # the memory moved λ (its cosine with a new gradient is not 0)


def test_sigma_histogram_of_a_stateful_rule_needs_its_state():
    x = jnp.ones(10)
    tx = hubopt.hub(optax.sgd(0.1), optax.sgd(0.0), sigma="hyper")
    state = tx.init(x)
    with pytest.raises(ValueError, match="has state: pass rule_state"):
        hubopt.sigma_histogram(x, sigma="hyper")
    counts = hubopt.sigma_histogram(x, sigma="hyper", rule_state=state.rule_state)
    assert int(np.sum(counts)) == 10 and int(np.max(counts)) == 10  # one σ for the tensor


def test_a_callable_rule_and_bad_rules():
    params = {"w": jnp.arange(4.0)}
    half = hubopt.hub(optax.sgd(1.0), optax.sgd(0.0), sigma=lambda g: jnp.full(g.shape, 0.5))
    u, _ = half.update(params, half.init(params), params)
    np.testing.assert_allclose(u["w"], -0.5 * np.arange(4.0))
    with pytest.raises(TypeError, match="sigma must be a rule name"):
        hubopt.hub(optax.sgd(1.0), optax.sgd(0.0), sigma=3)


@pytest.mark.parametrize("name", list(SIGMA_RULES))
def test_a_non_finite_gradient_entry_stays_in_its_entry(name):
    """σ sees a NaN or ∞ entry as |g| = 0: the tensor's other entries stay finite, and
    for a rule without state get the update they would get with that entry at 0."""
    g = jnp.asarray(np.random.default_rng(4).normal(size=(6, 5)), jnp.float32)
    rule = SIGMA_RULES[name]
    tx = hubopt.hub(optax.sgd(1.0), optax.sgd(0.5), sigma=name)
    others = np.ones((6, 5), bool)
    others[2, 3] = False
    for bad in (jnp.inf, -jnp.inf, jnp.nan):
        g_bad = g.at[2, 3].set(bad)
        state = tx.init(g)
        for _ in range(2):  # `hyper` also uses the step before
            u_bad, state = tx.update(g_bad, state, g)
        assert np.all(np.isfinite(np.asarray(u_bad)[others])), (name, bad)
        if rule.stateful:
            assert np.isfinite(float(state.rule_state.logit))
            continue
        w = np.asarray(rule.weights(g.at[2, 3].set(0.0), None)[0])
        want = -(w * np.asarray(g) + (1 - w) * 0.5 * np.asarray(g))  # σ weighs sgd(1.0)
        np.testing.assert_allclose(np.asarray(u_bad)[others], want[others], rtol=1e-5)


def _small_hand_steps_beside_large_ones(rule: str, seed: int):
    """Three gradients and HUB(sgd(1e-3), sign descent) with `rule`, initialised: the
    learned member's steps are about a thousand times the hand one's."""
    rng = np.random.default_rng(seed)
    grads = [jnp.asarray(rng.normal(size=9), jnp.float32) for _ in range(3)]
    sign_descent = optax.chain(optax.scale_by_sign(), optax.scale(-1.0))
    tx = hubopt.hub(optax.sgd(1e-3), sign_descent, sigma=rule)
    return grads, tx, tx.init(grads[0])


def _weight_for_share_by_hand(share: float, n_hand: float, n_learned: float) -> float:
    """The hand weight σ whose part σ n_h of the step's L1 mass is the share s."""
    return share * n_learned / (share * n_learned + (1 - share) * n_hand)


def test_hyper_share_gives_the_sides_shares_of_the_step_by_hand():
    """Three steps of HUB(sgd(1e-3), sign descent) with `hyper_share` against the rule
    computed here: λ as `hyper`'s but with d = Û_σ − Û_o (updates scaled to L1 norm 1),
    σ = s n_o / (s n_o + (1 − s) n_σ); the hand member's share of the mixed update is
    s = sigmoid(λ) although its steps are about a thousand times smaller."""
    grads, tx, state = _small_hand_steps_beside_large_ones("hyper_share", seed=6)
    logit, d = 0.0, np.zeros(9)
    for g in grads:
        g64 = np.asarray(g, np.float64)
        logit = _hyper_logit_by_hand(logit, g64, d)
        s = 1.0 / (1.0 + np.exp(-logit))
        u_hand, u_learned = -1e-3 * g64, -np.sign(g64)
        n_h, n_l = np.abs(u_hand).sum(), np.abs(u_learned).sum()
        sigma = _weight_for_share_by_hand(s, n_h, n_l)
        want = sigma * u_hand + (1 - sigma) * u_learned
        u, state = tx.update(g, state, g)
        np.testing.assert_allclose(np.asarray(u), want, rtol=1e-4, atol=2e-7)  # 1 − σ in f32
        assert float(state.rule_state.logit) == pytest.approx(logit, abs=1e-6)
        stats = hubopt.hub_stats(state)["<root>"]
        assert stats["hand_share"] == pytest.approx(s, rel=1e-4)  # float32 sums
        assert stats["sigma_mean"] == pytest.approx(sigma, rel=1e-4)
        d = u_hand / n_h - u_learned / n_l
    assert logit != 0.0


def test_hyper_share_keeps_its_share_where_the_members_point_the_same_way():
    """sgd(1e-3) and sgd(1.0) differ only in size: their normalised updates are equal, d
    is 0 (not rounding noise) and λ stays 0, so each keeps half of the step."""
    rng = np.random.default_rng(7)
    tx = hubopt.hub(optax.sgd(1e-3), optax.sgd(1.0), sigma="hyper_share")
    g = jnp.asarray(rng.normal(size=64), jnp.float32)
    state = tx.init(g)
    for _ in range(5):
        g = jnp.asarray(rng.normal(size=64), jnp.float32)
        _, state = tx.update(g, state, g)
    assert float(state.rule_state.logit) == 0.0
    assert hubopt.hub_stats(state)["<root>"]["hand_share"] == pytest.approx(0.5, rel=1e-4)


def test_hyper_share_falls_back_to_its_share_where_a_member_stands_still():
    tx = hubopt.hub(optax.sgd(0.1), optax.scale(0.0), sigma="hyper_share")
    x = jnp.linspace(-1.0, 1.0, 8)
    state = tx.init(x)
    u, state = tx.update(x, state, x)  # λ = 0: σ = s = ½ of sgd's step, not 1 of it
    np.testing.assert_allclose(np.asarray(u), -0.05 * np.asarray(x), rtol=1e-6)


@pytest.mark.parametrize("rule", BY_UPDATES)
def test_a_rule_that_reads_the_members_updates_has_no_gradient_histogram(rule):
    with pytest.raises(ValueError, match="members' updates"):
        hubopt.sigma_histogram({"w": jnp.ones(3)}, sigma=rule, rule_state={"w": None})


def test_hyper_floor_keeps_the_hand_members_share_of_the_step_by_hand():
    """Three steps of HUB(sgd(1e-3), sign descent) with `hyper_floor` against the rule
    computed here: `hyper`'s λ and σ = sigmoid(λ), whose hand share σ n_h / (σ n_h +
    (1 − σ) n_l) is about 0.001 (sign descent's steps are ~1000× sgd's), so the share
    is raised to b and σ = b n_l / (b n_l + (1 − b) n_h)."""
    grads, tx, state = _small_hand_steps_beside_large_ones("hyper_floor", seed=8)
    logit, d = 0.0, np.zeros(9)
    for g in grads:
        g64 = np.asarray(g, np.float64)
        logit = _hyper_logit_by_hand(logit, g64, d)
        u_hand, u_learned = -1e-3 * g64, -np.sign(g64)
        n_h, n_l = np.abs(u_hand).sum(), np.abs(u_learned).sum()
        sigma = 1.0 / (1.0 + np.exp(-logit))
        assert sigma * n_h / (sigma * n_h + (1 - sigma) * n_l) < SHARE_FLOOR  # raised
        sigma = _weight_for_share_by_hand(SHARE_FLOOR, n_h, n_l)
        want = sigma * u_hand + (1 - sigma) * u_learned
        u, state = tx.update(g, state, g)
        np.testing.assert_allclose(np.asarray(u), want, rtol=1e-4, atol=2e-7)
        assert float(state.rule_state.logit) == pytest.approx(logit, abs=1e-6)
        stats = hubopt.hub_stats(state)["<root>"]
        assert stats["hand_share"] == pytest.approx(SHARE_FLOOR, rel=1e-4)
        d = u_hand - u_learned  # hyper's difference, not normalised
    assert logit != 0.0


def test_hyper_floor_is_hyper_bit_for_bit_above_its_floor():
    """sgd(0.2) against sgd(0.1): the hand member's share stays above b while the learned
    one's falls below it (only σ's side has a floor), so every update and λ are
    `hyper`'s exactly."""
    rng = np.random.default_rng(9)
    target = jnp.asarray(rng.normal(size=(5, 4)), jnp.float32)
    runs = []
    for rule in ("hyper", "hyper_floor"):
        tx = hubopt.hub(optax.sgd(0.2), optax.sgd(0.1), sigma=rule)
        x = jnp.zeros((5, 4))
        state = tx.init(x)
        for _ in range(20):  # λ → 4: the hand member takes most of the step
            u, state = tx.update(x - target + 0.1 * jnp.sin(3.0 * x), state, x)
            x = x + u
            assert hubopt.hub_stats(state)["<root>"]["hand_share"] > SHARE_FLOOR
        assert hubopt.hub_stats(state)["<root>"]["hand_share"] > 1 - SHARE_FLOOR
        runs.append((np.asarray(state.rule_state.logit), np.asarray(x)))
    np.testing.assert_array_equal(runs[1][0], runs[0][0])
    np.testing.assert_array_equal(runs[1][1], runs[0][1])
    assert runs[0][0] != 0.0


def test_hyper_floor_is_hyper_where_a_member_stands_still():
    tx = hubopt.hub(optax.sgd(0.1), optax.scale(0.0), sigma="hyper_floor")
    x = jnp.linspace(-1.0, 1.0, 8)
    state = tx.init(x)
    u, state = tx.update(x, state, x)  # λ = 0: σ = ½ of sgd's step
    np.testing.assert_allclose(np.asarray(u), -0.05 * np.asarray(x), rtol=1e-6)


@pytest.mark.parametrize("rule", HYPER)
def test_the_hyper_rules_mean_weight_does_not_move_with_the_width(rule):
    """i.i.d. heavy-tailed gradients, uncorrelated with the past updates: after 5 steps of
    HUB(sgd, sign descent) the mean hand weight (`hyper_share`: the hand share of the
    step) of 300 tensors of 10 entries is that of one tensor of 10⁶, within 5%."""
    rng = np.random.default_rng(1)
    sign_descent = optax.chain(optax.scale_by_sign(), optax.scale(-0.01))
    tx = hubopt.hub(optax.sgd(0.1), sign_descent, sigma=rule)
    key = "hand_share" if rule == "hyper_share" else "sigma_mean"

    def mean_weight(shapes):
        params = {f"t{i}": jnp.zeros(s) for i, s in enumerate(shapes)}
        state = tx.init(params)
        for _ in range(5):
            g = {k: jnp.asarray(rng.standard_t(4, v.shape), jnp.float32) for k, v in params.items()}
            _, state = tx.update(g, state, params)
        return np.mean([s[key] for s in hubopt.hub_stats(state).values()])

    narrow, wide = mean_weight([(10,)] * 300), mean_weight([(10**6,)])
    assert abs(wide - narrow) <= 0.05 * narrow, (narrow, wide)
