"""The optax face of VeLO: arguments, hub integration, jit, weight decay, accumulation."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hubopt
from hubopt.learned import VeloState, init_velo_theta, velo
from hubopt.learned.velo_lopt.checkpoint import save_velo_theta

THETA = init_velo_theta(jax.random.PRNGKey(3), lstm_hidden_size=16, param_inits=4)
THETA["lstm_init_state"]["hidden"] = np.linspace(-0.5, 0.5, 16, dtype=np.float32)[None]
TX = velo(10, theta=THETA)
# One compile shared by the tests below: the horizon is part of the state (traced),
# so states from velo(n) for any n go through the same executable.
UPDATE = jax.jit(TX.update)


def _params():
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    return {
        "w": jax.random.normal(k1, (5, 3), jnp.float32),
        "b": jax.random.normal(k2, (3,), jnp.float32) * 0.1,
    }


def _grads(i):
    k1, k2 = jax.random.split(jax.random.PRNGKey(100 + i))
    return {"w": jax.random.normal(k1, (5, 3), jnp.float32), "b": jax.random.normal(k2, (3,))}


def _run(n, tx=TX, update=UPDATE, grads_fn=_grads, loss_fn=lambda i: 1.0 / (i + 1), params=None):
    params = _params() if params is None else params
    state = tx.init(params)
    out = []
    for i in range(n):
        u, state = update(grads_fn(i), state, params, value=jnp.float32(loss_fn(i)))
        params = optax.apply_updates(params, u)
        out.append(u)
    return out, params, state


def test_missing_params_or_value_raise_type_error():
    params = _params()
    state = TX.init(params)
    assert isinstance(state, VeloState)
    with pytest.raises(TypeError, match="params"):
        TX.update(_grads(0), state)
    with pytest.raises(TypeError, match="value=loss"):
        TX.update(_grads(0), state, params)
    with pytest.raises(ValueError, match="scalar"):
        TX.update(_grads(0), state, params, value=jnp.ones(2))


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_steps"):
        velo(0, theta=THETA)
    with pytest.raises(ValueError, match="weight_decay"):
        velo(10, theta=THETA, weight_decay=-1.0)
    with pytest.raises(TypeError, match="theta"):
        velo(10, theta=42)
    broken = {**THETA, "ff_mod_stack": {"~": dict(THETA["ff_mod_stack"]["~"])}}
    del broken["ff_mod_stack"]["~"]["w1"]
    with pytest.raises(ValueError, match=r"missing keys \['ff_mod_stack/~/w1'\]"):
        velo(10, theta=broken)


def test_theta_path_and_tree_agree(tmp_path):
    save_velo_theta(tmp_path / "params", THETA)
    params = _params()
    s_path = velo(10, theta=str(tmp_path / "params")).init(params)
    s_tree = TX.init(params)
    # The LSTM state starts from theta's lstm_init_state, tiled over the 2 tensors.
    expected = np.tile(THETA["lstm_init_state"]["hidden"], (2, 1))
    np.testing.assert_array_equal(s_path.lstm_hidden, expected)
    np.testing.assert_array_equal(s_tree.lstm_hidden, expected)
    u_path, _ = UPDATE(_grads(0), s_path, params, value=jnp.float32(1.0))
    u_tree, _ = UPDATE(_grads(0), s_tree, params, value=jnp.float32(1.0))
    leaves = zip(jax.tree_util.tree_leaves(u_path), jax.tree_util.tree_leaves(u_tree), strict=True)
    for x, y in leaves:
        np.testing.assert_array_equal(x, y)
        assert np.any(x)


def test_hub_with_adamax_under_jit_no_recompile():
    tx = hubopt.hub(optax.adamax(1e-3), velo(20, theta=THETA))
    params = _params()
    state = tx.init(params)

    @jax.jit
    def step(params, state, grads, loss):
        # Unknown extra args reach VeLO through hub and are accepted (optax convention).
        u, state = tx.update(grads, state, params, value=loss, value_fn=None, other=3)
        return optax.apply_updates(params, u), state

    p1, s1 = step(params, state, _grads(0), jnp.float32(2.0))
    p2, s2 = step(p1, s1, _grads(1), jnp.float32(1.5))
    assert step._cache_size() == 1
    velo_state = s2.members.learned
    assert int(velo_state.iteration) == 2 and int(velo_state.loss_buffer.iteration) == 2
    for a, b in zip(jax.tree_util.tree_leaves(p2), jax.tree_util.tree_leaves(params), strict=True):
        assert np.all(np.isfinite(a)) and not np.array_equal(a, b)
    with pytest.raises(TypeError, match="value"):
        tx.update(_grads(0), state, params)  # hub without the loss: VeLO says what is missing


def test_updates_keep_param_dtype():
    params = jax.tree_util.tree_map(lambda p: p.astype(jnp.bfloat16), _params())
    u, _ = jax.jit(TX.update)(_grads(0), TX.init(params), params, value=1.0)
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree_util.tree_leaves(u))


def test_weight_decay_is_gradient_and_loss_l2():
    """velo(wd) == velo(0) fed g + wd·p and L + wd·Σp² (learned_optimization's wrapper)."""
    wd = 0.3
    tx_wd, tx0 = velo(10, theta=THETA, weight_decay=wd), TX
    params = _params()
    s_wd, s0 = tx_wd.init(params), tx0.init(params)
    up_wd, up0 = jax.jit(tx_wd.update), UPDATE
    for i in range(3):
        g, loss = _grads(i), jnp.float32(2.0 - 0.1 * i)
        u_wd, s_wd = up_wd(g, s_wd, params, value=loss)
        g2 = jax.tree_util.tree_map(lambda g, p: g + wd * p, g, params)
        l2 = loss + sum(wd * jnp.sum(p**2) for p in jax.tree_util.tree_leaves(params))
        u0, s0 = up0(g2, s0, params, value=l2)
        for a, b in zip(
            jax.tree_util.tree_leaves(u_wd), jax.tree_util.tree_leaves(u0), strict=True
        ):
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-7)  # fusion rounding
        params = optax.apply_updates(params, u_wd)
    np.testing.assert_allclose(s_wd.loss_buffer.means, s0.loss_buffer.means, rtol=1e-6)
    u_plain, _ = up0(_grads(0), tx0.init(_params()), _params(), value=jnp.float32(2.0))
    u_decay, _ = up_wd(_grads(0), tx_wd.init(_params()), _params(), value=jnp.float32(2.0))
    assert not np.allclose(u_plain["w"], u_decay["w"])


def test_gradient_accumulation_matches_velo_on_means():
    """num_steps=10 > max 4: n = 3 calls per VeLO step, horizon 10 // 3 = 3."""
    acc = velo(10, theta=THETA, max_training_steps=4)
    ref = velo(3, theta=THETA)
    losses = [3.0, 2.0, 1.0, 0.5, 0.4, 0.3]
    out, params_acc, state = _run(6, acc, jax.jit(acc.update), loss_fn=lambda i: losses[i])
    assert int(state.num_steps) == 3 and int(state.iteration) == 2
    for i in (0, 1, 3, 4):
        assert all(not np.any(x) for x in jax.tree_util.tree_leaves(out[i]))
    # Reference: plain VeLO with horizon 3 on the means of each group of 3.
    params = _params()
    s = ref.init(params)
    assert int(s.num_steps) == 3
    for k in range(2):
        g = jax.tree_util.tree_map(lambda *xs: sum(xs) / 3, *[_grads(3 * k + j) for j in range(3)])
        loss = jnp.float32(sum(losses[3 * k : 3 * k + 3]) / 3)
        u, s = UPDATE(g, s, params, value=loss)  # VeLO with horizon 3 (in the state)
        for a, b in zip(
            jax.tree_util.tree_leaves(out[3 * k + 2]), jax.tree_util.tree_leaves(u), strict=True
        ):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8)
        params = optax.apply_updates(params, u)
    assert any(np.any(x) for x in jax.tree_util.tree_leaves(out[2]))
    assert int(state.accum_count) == 0 and not np.any(state.accum_grads["w"])


def test_no_accumulation_at_or_below_max():
    state = velo(4, theta=THETA, max_training_steps=4).init(_params())
    assert state.accum_grads == () and int(state.num_steps) == 4


def test_tensors_are_coupled_through_the_lstm_max_pool():
    """VELO_SPEC §9 (12): adding a tensor changes the other tensors' updates, so VeLO must
    see the whole parameter tree (do not split it with optax.masked/partition)."""
    extra = {"w": jnp.ones((7,), jnp.float32) * 3.0}
    alone, _, _ = _run(2)
    params = {**_params(), "z_extra": extra["w"]}
    grads = lambda i: {**_grads(i), "z_extra": jnp.full((7,), 5.0, jnp.float32)}  # noqa: E731
    together, _, _ = _run(2, update=jax.jit(TX.update), grads_fn=grads, params=params)
    assert not np.allclose(alone[1]["w"], together[1]["w"])


def test_init_velo_theta_distribution():
    theta = init_velo_theta(jax.random.PRNGKey(0), lstm_hidden_size=64, param_inits=32)
    w = theta["rnn_params"]["rnn/linear"]["w"]
    assert w.shape == (128, 256) and w.dtype == np.float32
    sigma = 1 / np.sqrt(128)
    assert np.max(np.abs(w)) <= 2 * sigma * (1 + 1e-6)
    np.testing.assert_allclose(w.std(), 0.8796 * sigma, rtol=0.05)  # std of N(0,1) cut at ±2
    w0 = theta["ff_mod_stack"]["~"]["w0__0"]
    np.testing.assert_allclose(w0.std(), 0.8796 / np.sqrt(30), rtol=0.1)  # fan_in 30
    assert not np.any(theta["lstm_init_state"]["hidden"]) and not np.any(
        theta["rnn_params"]["linear"]["b"]
    )
    assert not np.array_equal(w0[0], w0[1])  # the K copies differ
    with pytest.raises(ValueError):
        init_velo_theta(jax.random.PRNGKey(0), 0, 4)


@pytest.mark.parametrize("shape", [(4, 4, 4), (2, 7, 3), (6, 1), (1, 1)])
def test_fused_factored_path_matches_reference_layout(shape):
    """The fused per-element MLP (normalisers folded into weights, R/C groups on their own
    shape) against the straightforward one that builds all 30 input channels (VELO_SPEC §4.7)."""
    from hubopt.learned.velo_lopt import _math as vm

    keys = jax.random.split(jax.random.PRNGKey(sum(shape)), 8)
    p = jax.random.normal(keys[0], shape)
    acc = vm.init_accum(shape)
    for i in range(3):  # a few updates so every accumulator is non-trivial
        g = jax.random.normal(keys[1 + i], shape) * (i + 1)
        acc = vm.update_accum(acc, g)
    ff = {k: v[0] for k, v in THETA["ff_mod_stack"]["~"].items()}
    w = {k: jnp.asarray(v) * 3.0 + 0.1 for k, v in ff.items()}  # non-zero biases too
    dims = vm.factored_dims(shape)

    @jax.jit
    def both(p, g, acc):
        fused, _ = vm.mlp_step_factored(w, 0.7, p, g, acc, dims)
        rho, kappa = vm.factored_factors(acc.row, acc.col, dims)
        fac = jnp.expand_dims(rho, 1 + dims[1]) * jnp.expand_dims(kappa, 1 + dims[0])
        groups = vm.mlp_groups(p, g, acc, fac, fac)
        assert sum(x.shape[0] for x in groups) == 30
        ref, _ = vm.mlp_step(w, 0.7, p, groups)
        return fused, ref

    fused, ref = both(p, g, acc)
    assert fused.shape == shape and np.any(ref)
    np.testing.assert_allclose(fused, ref, rtol=2e-5, atol=2e-5 * float(np.max(np.abs(ref))))


def test_layouts_agree():
    """The joined `FlatLayout` path, the per-tensor path and "auto" (the small tensors
    joined, the large one per tensor) give the same updates and states over 4 steps,
    on every kind of tensor: a scalar, vectors, a (1, n) row, a 4-d kernel, one tensor
    above `FLAT_MAX_SIZE`, and a tensor of 129 entries (a partial block)."""
    from hubopt.learned.velo_lopt import transform

    keys = jax.random.split(jax.random.PRNGKey(7), 16)
    shapes = {
        "scalar": (),
        "bias": (7,),
        "row": (1, 6),
        "conv": (3, 3, 4, 6),
        "odd": (129,),
        "matrix": (33, 5),
        "large": (150, transform.FLAT_MAX_SIZE // 150 + 1),
    }
    params = {
        k: jax.random.normal(keys[i], s) * (0.1 * (i + 1))
        for i, (k, s) in enumerate(shapes.items())
    }
    assert transform._joined(list(shapes.values()), "auto") == [0, 1, 2, 3, 4, 5]
    assert transform._joined(list(shapes.values()), "flat") == list(range(7))
    assert transform._joined(list(shapes.values()), "per_tensor") == []

    def run(layout):
        tx = velo(50, theta=THETA, layout=layout)
        state, p, out = tx.init(params), params, []
        update = jax.jit(tx.update)
        for step in range(4):
            g = {
                k: jax.random.normal(jax.random.fold_in(keys[8 + step], i), jnp.shape(x))
                for i, (k, x) in enumerate(p.items())
            }
            u, state = update(g, state, p, value=jnp.float32(2.0 / (step + 1)))
            p = jax.tree_util.tree_map(lambda a, b: a + b, p, u)
            out.append(u)
        return out, state

    (ref, ref_state), others = run("per_tensor"), [run("flat"), run("auto")]
    for updates, state in others:
        for u, r in zip(updates, ref, strict=True):
            for k in shapes:
                scale = float(np.max(np.abs(r[k])))
                assert scale > 0, k
                # VELO_SPEC §7's step tolerance (sums in another order, through the LSTM)
                np.testing.assert_allclose(u[k], r[k], rtol=0, atol=1e-4 * scale, err_msg=k)
        np.testing.assert_allclose(state.lstm_hidden, ref_state.lstm_hidden, atol=1e-5)
        mine, want = (jax.tree_util.tree_leaves(s.mom) for s in (state, ref_state))
        for a, b in zip(mine, want, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("layout", ["auto", "per_tensor"])
def test_an_empty_tensor_takes_no_part(layout):
    """A tensor with no entries gets a zero step and leaves the others' updates (and
    the LSTM's max-pool over tensors) as they are without it; it used to make every
    update NaN (its means are 0/0)."""
    keys = jax.random.split(jax.random.PRNGKey(11), 3)
    params = {"b": jax.random.normal(keys[0], (5,)), "w": jax.random.normal(keys[1], (4, 6))}
    with_empty = {**params, "e": jnp.zeros((0, 3))}
    grads = jax.tree_util.tree_map(lambda p: jax.random.normal(keys[2], p.shape), with_empty)

    def two_steps(p):
        tx = velo(20, theta=THETA, layout=layout)
        state, update = tx.init(p), jax.jit(tx.update)
        g = {k: grads[k] for k in p}
        for loss in (1.0, 0.5):
            u, state = update(g, state, p, value=jnp.float32(loss))
            p = jax.tree_util.tree_map(lambda a, b: a + b, p, u)
        return u, state

    u_ref, s_ref = two_steps(params)
    u, s = two_steps(with_empty)
    assert u["e"].shape == (0, 3)
    for k in params:
        assert np.all(np.isfinite(u[k]))
        np.testing.assert_allclose(u[k], u_ref[k], rtol=1e-6, atol=1e-9, err_msg=k)
    # leaves in key order b, e, w: the empty tensor's LSTM row keeps its initial state
    np.testing.assert_allclose(s.lstm_hidden[np.array([0, 2])], s_ref.lstm_hidden, rtol=1e-6)
    np.testing.assert_array_equal(s.lstm_hidden[1], THETA["lstm_init_state"]["hidden"][0])


def test_a_nan_loss_gives_non_finite_steps_in_every_layout():
    """The joined layout's MLP sits behind a conditional whose other branch (NaN steps)
    is taken for a non-finite per-tensor learning rate ℓ, which a NaN loss gives (through
    the loss features and the LSTM): the per-tensor path's steps are non-finite then too,
    so the layouts agree on what the user sees."""
    params = {"b": jnp.ones(5), "w": jnp.ones((4, 3))}
    for layout in ("flat", "per_tensor"):
        tx = velo(10, theta=THETA, layout=layout)
        u, _ = jax.jit(tx.update)(params, tx.init(params), params, value=jnp.float32(jnp.nan))
        assert not np.any(np.isfinite(u["b"])) and not np.any(np.isfinite(u["w"])), layout


def test_unknown_layout_is_refused():
    with pytest.raises(ValueError, match="velo: layout must be one of"):
        velo(10, theta=THETA, layout="rows")


def _lstm_features_numpy(p, mom, v, fraction, loss_feat):
    """VELO_SPEC §4.3 in float64 NumPy, straight from the text."""
    p, v = np.asarray(p, np.float64), np.asarray(v, np.float64)
    m = np.stack([np.asarray(x, np.float64) for x in mom], axis=-1)  # S+(3,)
    axes = tuple(range(p.ndim))
    s = 1 / np.sqrt(max(1e-9, np.mean(p**2)))
    ms, vs = m * s, v * s
    mean_m = ms.mean(axis=axes) if axes else ms
    var_m = ((ms - mean_m) ** 2).mean(axis=axes) if axes else np.zeros(3)
    var_v = ((vs[..., None] - mean_m) ** 2).mean(axis=axes) if axes else (vs - mean_m) ** 2
    lam = lambda x: 0.5 * np.clip(np.log(1e-8 + np.abs(10 * x)), -5, 5)  # noqa: E731
    rank = sum(d > 1 for d in p.shape)
    one_hot = np.eye(6)[min(rank, 5), :5]
    taus = np.array([0.03, 0.1, 0.2, 0.4, 0.6, 0.8, 0.9, 1.0, 1.1])
    return np.concatenate(
        [
            np.tanh(10 * (fraction - taus)),
            loss_feat,
            [lam(np.mean(vs))],
            one_hot,
            lam(var_m),
            lam(var_v),
        ]
    )


@pytest.mark.parametrize("case", ["random", "offset", "constant", "scalar", "zero_p"])
def test_lstm_features_against_numpy(case):
    """The per-tensor LSTM inputs vs a float64 NumPy transcription, incl. hard cases."""
    from hubopt.learned.velo_lopt import _math as vm

    rng = np.random.default_rng(7)
    shape = () if case == "scalar" else (40, 30)
    p = rng.normal(size=shape).astype(np.float32) * (0.0 if case == "zero_p" else 0.05)
    mom = [rng.normal(size=shape).astype(np.float32) * 0.01 for _ in range(3)]
    v = np.abs(rng.normal(size=shape)).astype(np.float32) * 1e-4
    if case == "offset":  # means 5e4 x the spread, features not clipped: a naive
        p = p * 2e-3  # E[x²] − E[x]² would be off by ~1 in var' = s²·var ≈ 1e-2
        mom = [x * 1e-3 + 0.5 for x in mom]
        v = v * 1e-3 + 3e-4
    if case == "constant":
        mom = [np.full(shape, 0.02 * (a + 1), np.float32) for a in range(3)]
        v = np.full(shape, 1e-3, np.float32)
    loss_feat = rng.uniform(-1, 1, 9).astype(np.float32)
    got = jax.jit(vm.lstm_features)(p, mom, v, jnp.float32(0.37), loss_feat)
    want = _lstm_features_numpy(p, mom, v, 0.37, loss_feat)
    assert got.shape == (30,)
    # Offset case: float32 XLA means carry ~1e-7 relative error, which the centred
    # variance turns into ~5e-4 relative (the reference has the same); a one-pass
    # formula would be off by ~1e-2 here.
    np.testing.assert_allclose(got, want, atol=1e-3 if case == "offset" else 2e-5)
    if case == "offset":
        assert np.all(np.abs(want[24:27]) < 2.4)  # var_m features inside the clip range
    if case == "constant":
        np.testing.assert_array_equal(got[24:27], -2.5)  # var_m exactly 0


def test_a_run_past_num_steps_warns_once_from_the_host():
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _run(10)  # the whole budget: silent
        jax.effects_barrier()
        assert not caught
        _run(13)  # three steps past it: one warning, at step 11
        jax.effects_barrier()
    assert [str(w.message)[:34] for w in caught] == ["velo is running past its num_steps"]
