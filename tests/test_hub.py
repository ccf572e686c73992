"""HUB transform: σ, mixing, variants, diagnostics, errors, against NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import hubopt
from hubopt import layer_softmax

# --- members with updates that are easy to write down in NumPy --------------


def neg_grad():
    """Hand member: U_hand = −g (a plain GradientTransformation, no extra args)."""
    return optax.scale(-1.0)


def value_times_params():
    """Learned-like member that needs params and value=: U_learned = −value·params."""

    def init_fn(params):
        return optax.EmptyState()

    def update_fn(updates, state, params=None, *, value, **extra):
        del extra
        return jax.tree_util.tree_map(lambda p: (-value * p).astype(p.dtype), params), state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def np_softmax_abs(g):
    a = np.abs(np.asarray(g, np.float64)).ravel()
    e = np.exp(a - a.max())
    return (e / e.sum()).reshape(np.shape(g))


def make_tree(seed=0):
    rng = np.random.default_rng(seed)
    params = {
        "conv": {"w": rng.normal(size=(3, 3, 2, 4)).astype(np.float32)},
        "dense": {
            "b": rng.normal(size=(5,)).astype(np.float32),
            "w": rng.normal(size=(8, 5)).astype(np.float32),
        },
        "scalar": np.float32(rng.normal()),
    }
    grads = jax.tree_util.tree_map(
        lambda p: (3 * rng.normal(size=np.shape(p))).astype(np.float32), params
    )
    return params, grads


def reference_update(params, grads, value, mode_of, clip=None):
    """NumPy: the HUB update for U_hand = −g and U_learned = −value·p."""

    def leaf(path, p, g):
        sigma = np_softmax_abs(g)
        if clip is not None:
            sigma = np.clip(sigma, *clip)
        w = sigma if mode_of(path) == "default" else 1 - sigma
        return w * (-np.asarray(g, np.float64)) + (1 - w) * (-value * np.asarray(p, np.float64))

    return jax.tree_util.tree_map_with_path(
        lambda path, p, g: leaf(jax.tree_util.keystr(path), p, g), params, grads
    )


def run_hub(tx, params, grads, value=0.7):
    state = tx.init(params)
    return tx.update(grads, state, params, value=value)


# --- σ ---------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(), (1,), (7,), (3, 4), (2, 3, 4)])
def test_sigma_matches_numpy(shape):
    g = np.random.default_rng(1).normal(size=shape).astype(np.float32) * 5
    np.testing.assert_allclose(layer_softmax(g), np_softmax_abs(g), rtol=1e-5, atol=1e-7)


def test_sigma_of_one_entry_is_one_and_zero_grad_is_uniform():
    assert float(layer_softmax(jnp.float32(-123.0))) == 1.0
    sigma = np.asarray(layer_softmax(jnp.zeros((4, 5))))
    np.testing.assert_allclose(sigma, np.full((4, 5), 1 / 20), rtol=1e-6)


def test_sigma_is_stable_for_huge_gradients():
    g = jnp.array([1e30, -1e30, 3.0, 0.0], jnp.float32)
    sigma = np.asarray(layer_softmax(g))
    assert np.all(np.isfinite(sigma))
    np.testing.assert_allclose(sigma, [0.5, 0.5, 0.0, 0.0], atol=1e-7)


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(
        np.float32,
        hnp.array_shapes(max_dims=3, max_side=6),
        elements=st.floats(
            float(np.float32(-1e30)), float(np.float32(1e30)), width=32, allow_subnormal=False
        ),
    )
)
def test_sigma_is_a_distribution(g):
    sigma = np.asarray(layer_softmax(g), np.float64)
    assert sigma.shape == g.shape
    assert np.all((sigma >= 0) & (sigma <= 1))
    np.testing.assert_allclose(sigma.sum(), 1.0, rtol=1e-5)


# --- mixing: each variant against NumPy ------------------------------------


@pytest.mark.parametrize("mode", ["default", "inverted"])
@pytest.mark.parametrize("clip", [None, (0.05, 0.6)])
def test_update_matches_numpy(mode, clip):
    params, grads = make_tree()
    tx = hubopt.hub(neg_grad(), value_times_params(), mode=mode, clip=clip)
    updates, _ = run_hub(tx, params, grads, value=0.7)
    expected = reference_update(params, grads, 0.7, lambda _: mode, clip)
    for got, want in zip(
        jax.tree_util.tree_leaves(updates), jax.tree_util.tree_leaves(expected), strict=True
    ):
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)


def test_blocks_give_each_subtree_its_mode():
    params, grads = make_tree()
    labels = {
        "conv": {"w": "inverted"},
        "dense": {"b": "default", "w": "inverted"},
        "scalar": "default",
    }
    tx = hubopt.hub(neg_grad(), value_times_params(), blocks=labels)
    updates, _ = run_hub(tx, params, grads)
    inverted = {"['conv']['w']", "['dense']['w']"}
    expected = reference_update(
        params, grads, 0.7, lambda path: "inverted" if path in inverted else "default"
    )
    for got, want in zip(
        jax.tree_util.tree_leaves(updates), jax.tree_util.tree_leaves(expected), strict=True
    ):
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)
    # The same labels from a callable.
    tx_fn = hubopt.hub(neg_grad(), value_times_params(), blocks=lambda p: labels)
    updates_fn, _ = run_hub(tx_fn, params, grads)
    jax.tree_util.tree_map(np.testing.assert_array_equal, updates, updates_fn)


def test_clip_zero_one_equals_default():
    params, grads = make_tree()
    u_default, _ = run_hub(hubopt.hub(neg_grad(), value_times_params()), params, grads)
    u_clip, _ = run_hub(hubopt.hub(neg_grad(), value_times_params(), clip=(0, 1)), params, grads)
    jax.tree_util.tree_map(np.testing.assert_array_equal, u_default, u_clip)


def test_default_plus_inverted_is_hand_plus_learned():
    params, grads = make_tree()
    u_d, _ = run_hub(hubopt.hub(neg_grad(), value_times_params()), params, grads, 0.3)
    u_i, _ = run_hub(
        hubopt.hub(neg_grad(), value_times_params(), mode="inverted"), params, grads, 0.3
    )
    for d, i, p, g in zip(
        *(jax.tree_util.tree_leaves(t) for t in (u_d, u_i, params, grads)), strict=True
    ):
        np.testing.assert_allclose(
            np.asarray(d) + np.asarray(i), -g - 0.3 * p, rtol=1e-5, atol=1e-6
        )


def test_scalar_leaf_follows_hand_in_default_and_learned_in_inverted():
    params, grads = {"s": jnp.float32(2.0)}, {"s": jnp.float32(0.5)}
    u, _ = run_hub(hubopt.hub(neg_grad(), value_times_params()), params, grads, 1.0)
    assert float(u["s"]) == -0.5
    u, _ = run_hub(
        hubopt.hub(neg_grad(), value_times_params(), mode="inverted"), params, grads, 1.0
    )
    assert float(u["s"]) == -2.0


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16, jnp.float32])
def test_low_precision_params_keep_their_dtype(dtype):
    params = {"w": jnp.ones((4, 3), dtype), "b": jnp.zeros((3,), dtype)}
    grads = jax.tree_util.tree_map(lambda p: jnp.full(p.shape, 0.25, dtype), params)
    tx = hubopt.hub(optax.adam(1e-2), optax.adamax(1e-2))
    state = tx.init(params)
    updates, state = jax.jit(tx.update)(grads, state, params)
    for u in jax.tree_util.tree_leaves(updates):
        assert u.dtype == dtype
        assert np.all(np.isfinite(np.asarray(u, np.float32)))


def test_float64_params_are_mixed_in_float64():
    """With x64 on, a float64 tensor's update is the eq. 5 mixture to float64 precision
    (σ itself is a float32 weight), not rounded through float32."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(2)
        params = {"w": jnp.asarray(rng.normal(size=(5, 4)))}
        grads = {"w": jnp.asarray(rng.normal(size=(5, 4)) * 1e-3)}
        assert params["w"].dtype == jnp.float64
        tx = hubopt.hub(neg_grad(), optax.scale(-(1 + 1e-12)))
        updates, _ = tx.update(grads, tx.init(params), params)
        u = updates["w"]
        assert u.dtype == jnp.float64
        w = np.asarray(hubopt.layer_softmax(grads["w"]), np.float64)
        g = np.asarray(grads["w"], np.float64)
        want = w * -g + (1 - w) * -(1 + 1e-12) * g
        np.testing.assert_allclose(np.asarray(u), want, rtol=1e-13)


def test_huge_gradients_give_finite_updates():
    params = {"w": jnp.ones((10,))}
    grads = {"w": jnp.array([1e30] + [1.0] * 9, jnp.float32)}
    updates, state = run_hub(hubopt.hub(optax.sgd(1e-35), value_times_params()), params, grads)
    assert np.all(np.isfinite(updates["w"]))
    stats = hubopt.hub_stats(state)["w"]
    np.testing.assert_allclose(stats["sigma_max"], 1.0, atol=1e-6)


# --- diagnostics --------------------------------------------------------------


@pytest.mark.parametrize("mode, clip", [("inverted", (0.01, 0.5)), ("default", None)])
def test_stats_match_numpy(mode, clip):
    params, grads = make_tree()
    tx = hubopt.hub(neg_grad(), value_times_params(), clip=clip, mode=mode)
    _, state = run_hub(tx, params, grads, value=0.7)
    stats = hubopt.hub_stats(state)
    assert set(stats) == {"conv/w", "dense/b", "dense/w", "scalar"}
    g, p = np.asarray(grads["dense"]["w"]), np.asarray(params["dense"]["w"])
    sigma = np_softmax_abs(g) if clip is None else np.clip(np_softmax_abs(g), *clip)
    w = 1 - sigma if mode == "inverted" else sigma
    hand, learned = np.abs(w * g).sum(), np.abs((1 - w) * 0.7 * p).sum()
    got = stats["dense/w"]
    np.testing.assert_allclose(got["sigma_min"], sigma.min(), rtol=1e-5)
    np.testing.assert_allclose(got["sigma_mean"], sigma.mean(), rtol=1e-5)
    np.testing.assert_allclose(got["sigma_max"], sigma.max(), rtol=1e-5)
    np.testing.assert_allclose(got["hand_share"], hand / (hand + learned), rtol=1e-5)


@pytest.mark.parametrize("clip", [None, (0.2, 0.6)])
@pytest.mark.parametrize("rule", list(hubopt.SIGMA_RULES))
def test_every_rules_stats_match_numpy_of_its_own_weights(rule, clip):
    """The diagnostics come in closed form where the rule has one (softmax; `hyper`'s one
    weight per tensor): they must equal NumPy's reductions of the σ the rule gives."""
    params, grads = make_tree()
    tx = hubopt.hub(neg_grad(), value_times_params(), sigma=rule, clip=clip)
    state = tx.init(params)
    for _ in range(2):  # `hyper` moves σ from the step before
        before = state.rule_state
        _, state = tx.update(grads, state, params, value=0.7)
    stats = hubopt.hub_stats(state)
    for path, g, p in [
        ("dense/w", grads["dense"]["w"], params["dense"]["w"]),
        ("conv/w", grads["conv"]["w"], params["conv"]["w"]),
    ]:
        rule_state = None
        if hubopt.SIGMA_RULES[rule].stateful:  # the hyper rules
            rule_state = before["dense"]["w"] if path == "dense/w" else before["conv"]["w"]
        chosen = hubopt.SIGMA_RULES[rule]
        members = (-jnp.asarray(g), -0.7 * jnp.asarray(p)) if chosen.uses_updates else ()
        sigma, _ = chosen.weights(jnp.asarray(g), rule_state, *members)
        sigma = np.broadcast_to(np.asarray(sigma, np.float64), np.shape(g))
        if clip is not None:
            sigma = np.clip(sigma, *clip)
        hand = np.abs(sigma * -np.asarray(g)).sum()
        learned = np.abs((1 - sigma) * -0.7 * np.asarray(p)).sum()
        got = stats[path]
        np.testing.assert_allclose(got["sigma_min"], sigma.min(), rtol=1e-5, err_msg=path)
        np.testing.assert_allclose(got["sigma_mean"], sigma.mean(), rtol=1e-5, err_msg=path)
        np.testing.assert_allclose(got["sigma_max"], sigma.max(), rtol=1e-5, err_msg=path)
        np.testing.assert_allclose(got["hand_share"], hand / (hand + learned), rtol=1e-5)


def test_softmax_summary_is_the_reductions_of_the_softmax():
    from hubopt._src.sigma_rules import softmax_summary

    rng = np.random.default_rng(5)
    for g in [rng.normal(0, 3, (40, 25)), np.zeros((4, 5)), np.float32(2.0), [1e4, -1e4, 0]]:
        sigma = np_softmax_abs(g)
        got = softmax_summary(jnp.asarray(g, jnp.float32))
        np.testing.assert_allclose(got, [sigma.min(), sigma.mean(), sigma.max()], rtol=1e-5)


def test_a_rule_giving_weights_of_another_shape_is_refused_by_name():
    def half_width(g):
        return jnp.full(jnp.shape(g)[:1], 0.5)

    params, grads = make_tree()
    tx = hubopt.hub(neg_grad(), value_times_params(), sigma=half_width)
    with pytest.raises(
        ValueError,
        match=r"'half_width' gave weights of shape \(3,\) for a gradient of shape \(3, 3, 2, 4\)",
    ):
        run_hub(tx, params, grads)


@pytest.mark.parametrize("clip", [None, (1e-4, 0.5)])
def test_sigma_histogram_matches_numpy(clip):
    _params, grads = make_tree()
    grads = {**grads, "big": jnp.asarray(np.random.default_rng(3).normal(0, 4, (40, 25)))}
    counts = hubopt.sigma_histogram(grads, clip=clip)
    edges = np.asarray(hubopt.SIGMA_HIST_EDGES, np.float64)
    assert edges[0] == 0 and edges[-1] == 1 and np.all(np.diff(edges) > 0)
    for path, g in [("dense", grads["dense"]["w"]), ("big", grads["big"]), ("s", grads["scalar"])]:
        sigma = np_softmax_abs(np.asarray(g, np.float64))
        if clip is not None:
            sigma = np.clip(sigma, *clip)
        want, _ = np.histogram(sigma.ravel(), bins=edges.astype(np.float32))
        got = {"dense": counts["dense"]["w"], "big": counts["big"], "s": counts["scalar"]}[path]
        np.testing.assert_array_equal(got, want, err_msg=path)
        assert int(np.sum(got)) == np.size(g)
    # a one-entry tensor's σ = 1 lands in the last (closed) bin
    assert int(counts["scalar"][-1]) == 1
    # every tensor's entries are counted in its own bins (one bincount for all tensors):
    # an empty tensor gets zeros and its neighbours keep their counts
    with_empty = hubopt.sigma_histogram(
        {"a": grads["big"], "b": jnp.zeros((0, 3)), "c": grads["big"]}, clip=clip
    )
    np.testing.assert_array_equal(with_empty["a"], counts["big"])
    np.testing.assert_array_equal(with_empty["c"], counts["big"])
    assert with_empty["b"].shape == counts["big"].shape and int(np.sum(with_empty["b"])) == 0
    with pytest.raises(ValueError, match="B <= A"):
        hubopt.sigma_histogram(grads, clip=(0.5, 0.1))


def test_stats_are_nan_before_first_step_and_found_inside_chain():
    params, grads = make_tree()
    tx = optax.chain(optax.clip_by_global_norm(10.0), hubopt.hub(neg_grad(), value_times_params()))
    state = tx.init(params)
    assert np.isnan(hubopt.hub_stats(state)["dense/w"]["hand_share"])
    _, state = tx.update(grads, state, params, value=0.5)
    zero_stats = hubopt.hub_stats(state)
    assert 0 < zero_stats["dense/w"]["hand_share"] < 1
    with pytest.raises(ValueError, match="exactly one HubState"):
        hubopt.hub_stats(optax.adam(1e-3).init(params))


def test_zero_gradients_give_uniform_sigma_and_mean_weight_share():
    params = {"w": jnp.zeros((4, 5))}
    tx = hubopt.hub(neg_grad(), value_times_params())
    _, state = run_hub(tx, params, {"w": jnp.zeros((4, 5))})
    s = hubopt.hub_stats(state)["w"]
    np.testing.assert_allclose([s["sigma_min"], s["sigma_max"]], [0.05, 0.05], rtol=1e-6)
    np.testing.assert_allclose(s["hand_share"], 0.05, rtol=1e-6)  # both updates are zero


# --- optax integration -----------------------------------------------------------


def test_jit_does_not_recompile_on_second_call():
    params, grads = make_tree()
    tx = hubopt.hub(optax.adam(1e-3), value_times_params(), clip=(0.01, 0.9))
    traces = []

    @jax.jit
    def step(grads, state, params, value):
        traces.append(1)
        return tx.update(grads, state, params, value=value)

    state = tx.init(params)
    _, state = step(grads, state, params, 0.5)
    _, state = step(grads, state, params, 0.25)
    assert len(traces) == 1


def test_extra_args_pass_through_chain_and_unknown_ones_are_tolerated():
    params, grads = make_tree()
    tx = optax.chain(optax.scale(1.0), hubopt.hub(optax.sgd(0.1), value_times_params()))
    state = tx.init(params)
    updates, _ = tx.update(grads, state, params, value=1.0, some_unknown_arg=3)
    assert jax.tree_util.tree_structure(updates) == jax.tree_util.tree_structure(params)


@pytest.mark.parametrize("variant", [dict(), dict(mode="inverted"), dict(clip=(0.1, 0.9))])
def test_converges_on_a_parabola(variant):
    target = jnp.array([1.0, -2.0, 3.0])
    loss = lambda p: jnp.sum((p["x"] - target) ** 2)  # noqa: E731
    tx = hubopt.hub(optax.adam(0.1), optax.adamax(0.1), **variant)
    params = {"x": jnp.zeros(3)}
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        value, grads = jax.value_and_grad(loss)(params)
        updates, state = tx.update(grads, state, params, value=value)
        return optax.apply_updates(params, updates), state

    for _ in range(300):
        params, state = step(params, state)
    assert float(loss(params)) < 1e-3


# --- errors ------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(mode="sideways"), ValueError, "mode"),
        (dict(clip=(0.6, 0.4)), ValueError, "B <= A"),
        (dict(clip=(-0.1, 0.4)), ValueError, "lower bound B"),
        (dict(clip=(0.1, 1.5)), ValueError, "upper bound A"),
        (dict(clip=0.5), TypeError, "clip"),
        (dict(blocks={"w": "backbone"}), ValueError, "label"),
    ],
)
def test_invalid_arguments_are_named(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        hubopt.hub(optax.sgd(1.0), optax.sgd(1.0), **kwargs)


def test_blocks_not_matching_params_raise():
    tx = hubopt.hub(optax.sgd(1.0), optax.sgd(1.0), blocks={"a": "default"})
    with pytest.raises(ValueError, match="blocks must have the params' tree structure or a"):
        tx.init({"a": jnp.ones(2), "b": jnp.ones(2)})
    tx = hubopt.hub(optax.sgd(1.0), optax.sgd(1.0), blocks=lambda p: {"a": "nope"})
    with pytest.raises(ValueError, match="label"):
        tx.init({"a": jnp.ones(2)})


def test_members_must_be_optax_transforms():
    with pytest.raises(TypeError, match="learned"):
        hubopt.hub(optax.sgd(1.0), "velo")


def test_missing_extra_arg_names_the_member_and_argument():
    params, grads = make_tree()
    tx = hubopt.hub(neg_grad(), value_times_params())
    state = tx.init(params)
    with pytest.raises(TypeError, match=r"learned optimizer needs the extra argument.*value"):
        tx.update(grads, state, params)


@pytest.mark.parametrize(
    "alias, hand",
    [
        (hubopt.hub_adam, optax.adam(1e-2)),
        (hubopt.hub_adamax, optax.adamax(1e-2)),
        (hubopt.hub_adamw, optax.adamw(1e-2, weight_decay=1e-4)),
    ],
)
def test_aliases_equal_hub_of_the_named_optimizer(alias, hand):
    params, grads = make_tree()
    a, _ = run_hub(alias(1e-2, value_times_params(), clip=(0.01, 0.5)), params, grads)
    b, _ = run_hub(hubopt.hub(hand, value_times_params(), clip=(0.01, 0.5)), params, grads)
    jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)


def test_blocks_take_one_label_per_sub_tree():
    """A prefix label tree equals the same labels written out per leaf."""
    params, grads = make_tree()
    per_leaf = {
        "conv": {"w": "inverted"},
        "dense": {"b": "default", "w": "default"},
        "scalar": "inverted",
    }
    prefix = {"conv": "inverted", "dense": "default", "scalar": "inverted"}
    a, _ = run_hub(hubopt.hub(neg_grad(), value_times_params(), blocks=per_leaf), params, grads)
    b, _ = run_hub(hubopt.hub(neg_grad(), value_times_params(), blocks=prefix), params, grads)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


def test_stats_off_gives_the_same_update_and_nan_diagnostics():
    params, grads = make_tree()
    on, _ = run_hub(hubopt.hub(neg_grad(), value_times_params()), params, grads)
    off, state = run_hub(hubopt.hub(neg_grad(), value_times_params(), stats=False), params, grads)
    for x, y in zip(jax.tree_util.tree_leaves(on), jax.tree_util.tree_leaves(off), strict=True):
        np.testing.assert_array_equal(x, y)
    assert all(np.isnan(v) for d in hubopt.hub_stats(state).values() for v in d.values())


def test_hub_stats_finds_hub_states_in_any_pytree_and_picks_one_of_several():
    import flax.struct

    @flax.struct.dataclass
    class TrainState:
        step: jax.Array
        opt_state: object

    params, grads = make_tree()
    _, first = run_hub(hubopt.hub(neg_grad(), value_times_params()), params, grads)
    _, second = run_hub(
        hubopt.hub(neg_grad(), value_times_params(), clip=(0.2, 0.3)), params, grads
    )
    lone = TrainState(step=jnp.int32(1), opt_state=(optax.EmptyState(), first))
    assert hubopt.hub_stats(lone) == hubopt.hub_stats(first)
    both = TrainState(step=jnp.int32(1), opt_state={"a": first, "b": second})
    with pytest.raises(ValueError, match="found 2; pass which=i"):
        hubopt.hub_stats(both)
    assert hubopt.hub_stats(both, which=1)["dense/w"]["sigma_min"] == pytest.approx(0.2)
    with pytest.raises(ValueError, match="which=2 is not one of the 2"):
        hubopt.hub_stats(both, which=2)


@pytest.mark.parametrize("rule", ["rank", "sigmoid", "softmax_n"])
def test_a_stateless_rule_mixes_with_its_own_weights(rule):
    params, grads = make_tree()
    tx = hubopt.hub(neg_grad(), value_times_params(), sigma=rule, mode="inverted")
    updates, state = run_hub(tx, params, grads, value=0.7)
    g, p = grads["dense"]["w"], np.asarray(params["dense"]["w"])
    w = 1.0 - np.asarray(hubopt.SIGMA_RULES[rule].weights(jnp.asarray(g), None)[0])
    want = w * -np.asarray(g) + (1 - w) * (-0.7 * p)
    np.testing.assert_allclose(updates["dense"]["w"], want, rtol=1e-5, atol=1e-7)
    counts = hubopt.sigma_histogram(grads, sigma=rule)
    assert int(np.sum(counts["dense"]["w"])) == g.size
    with pytest.raises(ValueError, match="unknown sigma rule 'nope'"):
        hubopt.hub(neg_grad(), value_times_params(), sigma="nope")


def _nan_on_steps(steps):
    """A learned-like member: U = −0.5 g, but NaN in one entry of `w` on `steps`."""

    def init_fn(params):
        return {"count": jnp.zeros((), jnp.int32)}

    def update_fn(updates, state, params=None):
        bad = jnp.isin(state["count"], jnp.asarray(steps))
        out = jax.tree_util.tree_map(lambda g: -0.5 * g, updates)
        out["w"] = out["w"].at[0].set(jnp.where(bad, jnp.nan, out["w"][0]))
        return out, {"count": state["count"] + 1}

    return optax.GradientTransformation(init_fn, update_fn)


def test_nan_guard_falls_back_to_the_hand_update_and_counts_it():
    params = {"w": jnp.arange(1.0, 5.0), "b": jnp.ones(3)}
    grads = jax.tree_util.tree_map(lambda p: 0.1 * p, params)
    guarded = hubopt.hub(neg_grad(), _nan_on_steps([1, 3]), nan_guard=True)
    plain = hubopt.hub(neg_grad(), _nan_on_steps([1, 3]))
    gs, ps = guarded.init(params), plain.init(params)
    for step in range(5):
        ug, gs = guarded.update(grads, gs, params)
        up, ps = plain.update(grads, ps, params)
        if step in (1, 3):  # the whole tensor takes the hand update: −g
            np.testing.assert_allclose(ug["w"], -grads["w"])
            assert np.isnan(np.asarray(up["w"])[0])  # unguarded, the NaN passes through
        else:
            np.testing.assert_allclose(ug["w"], up["w"])
        np.testing.assert_allclose(ug["b"], up["b"])  # the other tensor is untouched
    stats = hubopt.hub_stats(gs)
    assert stats["w"]["guard_fired"] == 2 and stats["b"]["guard_fired"] == 0
    assert "guard_fired" not in hubopt.hub_stats(ps)["w"]
