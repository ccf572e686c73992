"""MLPLOpt: shapes, θ=0 = relative Adam by formula, a NumPy reference for any θ,
scale invariance, jit without recompiling, use inside HUB, theta checkpoints."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hubopt
from hubopt._src.flat_layout import BLOCK, FlatLayout
from hubopt.learned.small_lopt.architecture import (
    ANCHOR_FLOOR,
    MLPLOpt,
    MLPLOptState,
    momentum_set,
)


def _params():
    k1, k2 = jax.random.split(jax.random.key(3))
    return {
        "w": jax.random.normal(k1, (6, 4), jnp.float32) * 0.3,
        "b": jnp.zeros((4,), jnp.float32),
        "s": jnp.asarray(0.7, jnp.float32),
    }


def _loss(p, x):
    h = jnp.tanh(x @ p["w"] + p["b"][None, :])
    return jnp.mean((h - 0.5) ** 2) * (1.0 + p["s"] ** 2)


_X = jax.random.normal(jax.random.key(9), (8, 6), jnp.float32)


def _run(opt, params, n, x=_X, loss_scale=1.0):
    state = opt.init(params)
    ups = []
    for _ in range(n):
        v, g = jax.value_and_grad(lambda p: loss_scale * _loss(p, x))(params)
        u, state = opt.update(g, state, params, value=v)
        ups.append(u)
        params = optax.apply_updates(params, u)
    return params, ups, state


# ---------------------------------------------------------------- NumPy reference


def _np_mlp(theta, x):
    n = len(theta)
    for i in range(n):
        x = x @ np.asarray(theta[f"layer{i}"]["w"], np.float64) + np.asarray(
            theta[f"layer{i}"]["b"], np.float64
        )
        if i < n - 1:
            x = np.maximum(x, 0.0)
    return x


def _np_reference(lo: MLPLOpt, theta, params, n):
    """Independent float64 NumPy implementation of the module docstring's rule."""
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    decays = np.asarray(lo.momentum_decays)
    st = {k: dict(m=np.zeros((len(decays), *v.shape)), v=np.zeros(v.shape)) for k, v in p.items()}
    for k, v in p.items():
        st[k]["r"] = np.zeros(v.shape[:-1]) if v.ndim >= 2 else np.zeros(v.shape)
        st[k]["c"] = np.zeros(v.shape[-1:]) if v.ndim >= 2 else None
        st[k]["peak"] = 0.0
    loss_ema = None
    ups = []
    for t in range(1, n + 1):
        pj = {k: jnp.asarray(v, jnp.float32) for k, v in p.items()}
        val, g = jax.value_and_grad(lambda q: _loss(q, _X))(pj)
        val = float(val)
        loss_ema = val if loss_ema is None else loss_ema
        lf = math.tanh((val - loss_ema) / (abs(loss_ema) + 1e-8))
        loss_ema = 0.9 * loss_ema + 0.1 * val
        frac = min(t / 50.0, 1.0)
        u_all = {}
        for k in p:
            gk = np.asarray(g[k], np.float64)
            s = st[k]
            for i, b in enumerate(decays):
                s["m"][i] = b * s["m"][i] + (1 - b) * gk
            b2 = lo.second_decay
            s["v"] = b2 * s["v"] + (1 - b2) * gk**2
            if gk.ndim >= 2:
                s["r"] = b2 * s["r"] + (1 - b2) * (gk**2).mean(-1)
                s["c"] = b2 * s["c"] + (1 - b2) * (gk**2).mean(-2)
                fac = np.outer(s["r"] / s["r"].mean(), s["c"])
            else:
                s["r"] = b2 * s["r"] + (1 - b2) * gk**2
                fac = s["r"]
            mh = [s["m"][i] / (1 - b**t) for i, b in enumerate(decays)]
            den = np.sqrt(s["v"] / (1 - b2**t)) + lo.eps
            if lo.anchor_floor:  # κ × the largest sqrt(mean(v̂)) so far
                s["peak"] = max(s["peak"], math.sqrt(np.mean(s["v"] / (1 - b2**t))))
                den = den + ANCHOR_FLOOR * s["peak"]
            frs = 1 / np.sqrt(fac / (1 - b2**t) + lo.eps**2)
            prms = np.sqrt(np.mean(p[k] ** 2))
            feats = [np.clip(gk / den, -5, 5), *(m / den for m in mh)]
            if lo.factored_features:
                feats += [np.clip(gk * frs, -5, 5), mh[lo.anchor_index] * frs]
            feats.append(p[k] / max(prms, 1e-30))
            feats = [f / np.sqrt(np.mean(f**2) + 1e-12) for f in feats]
            x = np.stack([f.reshape(-1) for f in feats], -1)
            x = np.concatenate([x, np.tile([frac, frac * frac, lf], (x.shape[0], 1))], -1)
            out = _np_mlp(theta, x)
            d, sv = out[:, 0].reshape(gk.shape), out[:, 1].reshape(gk.shape)
            ts = np.tanh(sv)
            lm = np.where(ts >= 0, lo.log_mag_up * ts, lo.log_mag_down * ts)
            anchor = mh[lo.anchor_index] / den
            r = min(1.0, np.sqrt(np.mean(anchor**2))) if lo.relative_correction else 1.0
            direction = anchor + lo.dir_bound * r * np.tanh(d)
            decay = (
                0.5 * (1 + math.cos(math.pi * (t - 1) / 50.0)) if lo.step_decay == "cosine" else 1
            )
            u_all[k] = -lo.step_mult * decay * max(prms, lo.rms_floor) * np.exp(lm) * direction
        ups.append(u_all)
        p = {k: p[k] + u_all[k] for k in p}
    return p, ups


def _relative_adam(params, n, lr=1e-2, floor=0.1, b1=0.9, b2=0.999, eps=1e-8):
    """θ = 0 by hand: Δp = −lr · max(rms(p), floor) · m̂/(sqrt(v̂)+ε)."""
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v2 = {k: np.zeros_like(v) for k, v in p.items()}
    for t in range(1, n + 1):
        pj = {k: jnp.asarray(v, jnp.float32) for k, v in p.items()}
        g = jax.grad(lambda q: _loss(q, _X))(pj)
        for k in p:
            gk = np.asarray(g[k], np.float64)
            m[k] = b1 * m[k] + (1 - b1) * gk
            v2[k] = b2 * v2[k] + (1 - b2) * gk**2
            d = (m[k] / (1 - b1**t)) / (np.sqrt(v2[k] / (1 - b2**t)) + eps)
            p[k] = p[k] - lr * max(np.sqrt(np.mean(p[k] ** 2)), floor) * d
    return p


# ------------------------------------------------------------------------ tests


def test_theta_shapes_and_count():
    lo = MLPLOpt(hidden_sizes=(16, 8))
    theta = lo.init(jax.random.key(0))
    assert lo.num_features == 10
    assert jnp.shape(theta["layer0"]["w"]) == (10, 16)
    assert jnp.shape(theta["layer2"]["w"]) == (8, 2)
    n = sum(x.size for x in jax.tree_util.tree_leaves(theta))
    assert n == lo.num_meta_params() == 10 * 16 + 16 + 16 * 8 + 8 + 8 * 2 + 2
    assert float(jnp.abs(theta["layer2"]["w"]).max()) == 0.0  # output layer starts at zero
    assert 100 <= MLPLOpt().num_meta_params() <= 5000


def test_state_and_update_shapes():
    lo = MLPLOpt()
    params = _params()
    opt = lo.optimizer(lo.init(jax.random.key(0)), 20)
    state = opt.init(params)
    assert isinstance(state, MLPLOptState)
    # momenta and v̂ of all tensors in one FlatLayout: b (4 entries), s (1) and w (24),
    # in leaf order, take a block of BLOCK entries each
    assert state.mom.shape == (3, 3, BLOCK) and state.nu.shape == (3, BLOCK)
    assert state.fac_row["w"].shape == (6,) and state.fac_col["w"].shape == (4,)
    assert state.fac_row["b"].shape == (4,)
    _, ups, state = _run(opt, params, 2)
    for k, v in params.items():
        assert ups[-1][k].shape == v.shape and ups[-1][k].dtype == v.dtype
    assert int(state.count) == 2
    # v̂ in the layout is the EMA of g² of each tensor, zero in the padding
    flat_nu = np.asarray(state.nu)
    for block, size in enumerate((4, 1, 24)):
        assert np.all(flat_nu[block, :size] > 0) and np.all(flat_nu[block, size:] == 0)
    # a state made for other params is refused by name
    other = {"w": params["w"], "b": params["b"], "s": params["s"], "t": params["w"]}
    with pytest.raises(ValueError, match="state was made by init for other params"):
        opt.update(other, state, other, value=jnp.float32(1.0))


@pytest.mark.parametrize("zero", [True, False], ids=["theta0", "init"])
def test_theta_zero_and_init_equal_relative_adam(zero):
    lo = MLPLOpt()
    theta = lo.init(jax.random.key(1))
    if zero:
        theta = jax.tree_util.tree_map(jnp.zeros_like, theta)
    got, _, _ = _run(lo.optimizer(theta, 50), _params(), 12)
    want = _relative_adam(_params(), 12)
    for k in want:
        np.testing.assert_allclose(np.asarray(got[k]), want[k], rtol=2e-5, atol=1e-6)
    # the floor matters: b starts at zero so its step is lr * floor * sign-ish
    assert np.abs(want["b"]).max() > 1e-3


_LEAN = MLPLOpt(
    hidden_sizes=(16,), relative_correction=True, factored_features=False, step_decay="cosine"
)
_VARIANTS = {
    "free": MLPLOpt(),
    "relative_correction": MLPLOpt(relative_correction=True),
    "lean": _LEAN,
    "anchor_floor": dataclasses.replace(_LEAN, anchor_floor=True),
    "two_momenta_floor": dataclasses.replace(
        _LEAN, hidden_sizes=(8,), anchor_floor=True, **momentum_set(2)
    ),
}


@pytest.mark.parametrize("layout", ["flat", "per_tensor"])
@pytest.mark.parametrize("variant", list(_VARIANTS))
def test_matches_numpy_reference_for_random_theta(variant, layout):
    lo = _VARIANTS[variant]
    theta = lo.init(jax.random.key(5))
    # a non-trivial output layer so every branch is used
    width = lo.hidden_sizes[-1]
    theta["layer1"]["w"] = jax.random.normal(jax.random.key(6), (width, 2), jnp.float32) * 0.3
    theta["layer1"]["b"] = jnp.asarray([0.1, -0.2], jnp.float32)
    got, ups, _ = _run(lo.optimizer(theta, 50, layout=layout), _params(), 6)
    want, want_ups = _np_reference(lo, theta, _params(), 6)
    for t in range(6):
        for k in want:
            np.testing.assert_allclose(np.asarray(ups[t][k]), want_ups[t][k], rtol=2e-4, atol=1e-7)
    # and it differs from the anchor
    anchor = _relative_adam(_params(), 6)
    assert not np.allclose(np.asarray(got["w"]), anchor["w"], atol=1e-6)


def test_the_per_tensor_layout_keeps_each_tensors_statistics_in_its_shape():
    """layout="per_tensor": momenta and v̂ per tensor in its own shape (what shards as the
    tensor does), the same values as the flat layout's; a zero-size tensor gets a zero
    step; states of the other layout or other params are refused by name."""
    lo = MLPLOpt()
    theta = lo.init(jax.random.key(0))
    params = {**_params(), "empty": jnp.zeros((0, 3), jnp.float32)}

    def loss(p, x):
        return _loss(p, x) + jnp.sum(p["empty"])

    def run(opt):
        state, ups = opt.init(params), []
        for _ in range(3):
            v, g = jax.value_and_grad(loss)(params, _X)
            u, state = opt.update(g, state, params, value=v)
            ups.append(u)
        return ups, state

    flat_ups, flat_state = run(lo.optimizer(theta, 20))
    ups, state = run(lo.optimizer(theta, 20, layout="per_tensor"))
    assert isinstance(state.mom["w"], tuple) and len(state.mom["w"]) == 3
    assert all(m.shape == (6, 4) for m in state.mom["w"]) and state.nu["w"].shape == (6, 4)
    assert state.nu["s"].shape == () and ups[-1]["empty"].shape == (0, 3)
    # the flat layout holds the same statistics: b, s, w in leaf order (empty has none)
    live = ["b", "s", "w"]
    layout = FlatLayout.of([params[k].shape for k in live])
    for k, want in zip(live, layout.unflatten(flat_state.nu), strict=True):
        np.testing.assert_allclose(state.nu[k], want, rtol=1e-6)
    for j in range(3):
        want_mom = layout.unflatten(flat_state.mom[j])
        for k, want in zip(live, want_mom, strict=True):
            np.testing.assert_allclose(state.mom[k][j], want, rtol=1e-6, atol=1e-9)
    for t in range(3):
        for k in params:
            np.testing.assert_allclose(ups[t][k], flat_ups[t][k], rtol=2e-5, atol=1e-8)
    v, g = jax.value_and_grad(loss)(params, _X)
    with pytest.raises(ValueError, match="layout='flat'"):
        lo.optimizer(theta, 20, layout="per_tensor").update(g, flat_state, params, value=v)
    with pytest.raises(ValueError, match="holds per-tensor statistics.*layout='per_tensor'"):
        lo.optimizer(theta, 20).update(g, state, params, value=v)
    with pytest.raises(ValueError, match="layout must be one of"):
        lo.optimizer(theta, 20, layout="rows")


def _constant_output_theta(lo: MLPLOpt, d: float, s: float) -> dict:
    """θ whose MLP outputs (d, s) for every entry: a zero output weight, that bias."""
    theta = lo.init(jax.random.key(5))
    theta["layer1"]["b"] = jnp.asarray([d, s], jnp.float32)
    return theta


@pytest.mark.parametrize("relative", [False, True], ids=["free", "relative_correction"])
def test_steps_after_the_gradient_vanishes(relative):
    """Once a task is memorised its gradient vanishes. The first bundled optimizers kept
    stepping η·ρ·c_d·tanh(d) per entry (their loss spiked back up); with
    relative_correction the step decays with the anchor m̂/sqrt(v̂) (m̂ decays by 0.9 a
    step, sqrt(v̂) by sqrt(0.999))."""
    lo = MLPLOpt(relative_correction=relative)
    opt = lo.optimizer(_constant_output_theta(lo, d=0.5, s=0.0), 100)
    params = _params()
    state = opt.init(params)
    g = jax.grad(lambda p: _loss(p, _X))(params)
    zero = jax.tree_util.tree_map(jnp.zeros_like, g)
    for grads in [g] * 3 + [zero] * 60:
        u, state = opt.update(grads, state, params, value=jnp.asarray(0.1))
    step = float(np.abs(np.asarray(u["w"])).max())
    rms_w = float(np.sqrt(np.mean(np.square(np.asarray(params["w"])))))
    free_step = lo.step_mult * max(rms_w, lo.rms_floor) * lo.dir_bound * math.tanh(0.5)
    if relative:  # (0.9/sqrt(0.999))^60 ≈ 2e-3 of the anchor, bias corrections aside
        assert step < 1e-2 * free_step
    else:
        np.testing.assert_allclose(step, free_step, rtol=1e-2)  # the anchor's 2e-3 aside


@pytest.mark.parametrize("layout", ["flat", "per_tensor"])
def test_with_the_anchor_floor_steps_vanish_with_the_gradient(layout):
    """After gradients g, gradients 1e-4·g, as on a memorised task: once v̂ has caught up
    (β₂ = 0.9 here, so 300 steps suffice) Adam's anchor m̂/sqrt(v̂) is O(1) again and so
    is the step; with the floor the anchor is at most |m̂|/(κ·peak) = 1e-4·|g|/(κ·rms(g))
    per entry (peak = the first step's rms(g)), a step of ≲ 1e-4·max|g|/rms(g)/κ · η·ρ."""
    g = jax.grad(lambda p: _loss(p, _X))(_params())
    small = jax.tree_util.tree_map(lambda x: 1e-4 * x, g)
    steps = {}
    for floor in (False, True):
        lo = MLPLOpt(relative_correction=True, second_decay=0.9, anchor_floor=floor)
        opt = lo.optimizer(lo.init(jax.random.key(0)), 10_000, layout=layout)
        params, state = _params(), opt.init(_params())
        update = jax.jit(lambda gr, st, p, opt=opt: opt.update(gr, st, p, value=jnp.asarray(0.1)))
        for grads in [g] * 20 + [small] * 300:
            u, state = update(grads, state, params)
        steps[floor] = float(np.abs(np.asarray(u["w"])).max())
        if floor:
            peak = state.grad_peak if layout == "flat" else state.grad_peak["w"]
            rms_g = float(np.sqrt(np.mean(np.square(np.asarray(g["w"])))))
            np.testing.assert_allclose(np.ravel(peak)[-1], rms_g, rtol=1e-5)  # w: last
    rms_w = float(np.sqrt(np.mean(np.square(np.asarray(_params()["w"])))))
    free_step = 1e-2 * max(rms_w, 0.1)  # η·ρ, the step of an anchor of 1
    assert steps[False] > 0.5 * free_step
    ratio = float(np.abs(np.asarray(g["w"])).max() / rms_g)
    assert steps[True] < 1.1e-4 * ratio / ANCHOR_FLOOR * free_step


def test_theta_file_names_its_variant(tmp_path):
    from hubopt.learned.checkpoint import write_checkpoint
    from hubopt.learned.small_lopt import bundled
    from hubopt.learned.small_lopt.architecture import GEN_ID, GEN_ID_RELATIVE

    theta = jax.tree_util.tree_map(np.asarray, MLPLOpt().init(jax.random.key(0)))
    for gen_id, relative in [(GEN_ID, False), (GEN_ID_RELATIVE, True), ("", False)]:
        path = write_checkpoint(tmp_path / f"{gen_id or 'none'}.msgpack", theta, gen_id=gen_id)
        lopt, _ = bundled.load_theta_file(path)
        assert lopt.relative_correction is relative and lopt.gen_id == (gen_id or GEN_ID)
    path = write_checkpoint(tmp_path / "velo.msgpack", theta, gen_id="velo_v1")
    with pytest.raises(ValueError, match="gen_id 'velo_v1' names no MLPLOpt variant"):
        bundled.load_theta_file(path)


def test_every_variant_has_its_own_gen_id():
    """The 48 combinations of the four on/off departures from the first variant and the
    three momentum sets: 48 gen_ids, each read back as its variant; suffixes out of order
    or unknown are refused, and so is a momentum set no gen_id can name."""
    import itertools

    seen = set()
    for relative, factored, decay, floor, momenta in itertools.product(
        [False, True], [True, False], ["none", "cosine"], [False, True], [3, 2, 1]
    ):
        lo = MLPLOpt(
            hidden_sizes=(8,),
            relative_correction=relative,
            factored_features=factored,
            step_decay=decay,
            anchor_floor=floor,
            **momentum_set(momenta),
        )
        back = MLPLOpt.for_gen_id(lo.gen_id, (8,))
        assert back == lo and len(back.momentum_decays) == momenta
        seen.add(lo.gen_id)
    assert len(seen) == 48
    assert MLPLOpt(anchor_floor=True, **momentum_set(1)).gen_id == "hubopt_mlp_lopt_floor_m1"
    with pytest.raises(ValueError, match="have no gen_id"):
        _ = MLPLOpt(momentum_decays=(0.8, 0.99)).gen_id
    with pytest.raises(ValueError, match="momenta must be one of"):
        momentum_set(4)
    assert (
        MLPLOpt(
            relative_correction=True,
            factored_features=False,
            step_decay="cosine",
            anchor_floor=True,
        ).gen_id
        == "hubopt_mlp_lopt_relative_nofactored_cosine_floor"
    )
    assert (
        MLPLOpt(factored_features=False, step_decay="cosine").gen_id
        == "hubopt_mlp_lopt_nofactored_cosine"
    )
    for bad in [
        "hubopt_mlp_lopt_cosine_relative",
        "hubopt_mlp_lopt_floor_cosine",
        "hubopt_mlp_lopt_m1_floor",
        "hubopt_mlp_lopt_m2_m1",
        "hubopt_mlp_lopt_fast",
        "other_relative",
    ]:
        with pytest.raises(ValueError, match="names no MLPLOpt variant"):
            MLPLOpt.for_gen_id(bad, (8,))
    with pytest.raises(ValueError, match="step_decay must be one of"):
        MLPLOpt(step_decay="linear")


def test_without_factored_features_the_state_is_16_bytes_per_parameter():
    """Three momenta and v̂ in float32, nothing per row or column: 16 bytes per entry of
    the layout (whole blocks of 128), plus the count and the loss EMA."""
    params = {"w": jnp.zeros((128, 64)), "b": jnp.zeros((128,))}
    lean = MLPLOpt(factored_features=False)
    state = lean.optimizer(lean.init(jax.random.key(0)), 10).init(params)
    assert state.fac_row == () and state.fac_col == ()
    n = 128 * 64 + 128
    nbytes = sum(x.nbytes for x in jax.tree_util.tree_leaves(state))
    assert nbytes == 16 * n + 4 + 4
    full = MLPLOpt().optimizer(MLPLOpt().init(jax.random.key(0)), 10).init(params)
    assert sum(x.nbytes for x in jax.tree_util.tree_leaves(full)) == nbytes + 4 * (128 + 64 + 128)


def test_cosine_decay_shrinks_the_last_steps_by_construction():
    """With step_decay="cosine" the t-th of T steps is the undecayed rule's times
    ½(1 + cos(π (t−1)/T)): equal at t = 1, half at t = T/2 + 1, about 1e-3 at t = T."""
    base = MLPLOpt(relative_correction=True)
    cos = MLPLOpt(relative_correction=True, step_decay="cosine")
    theta = _constant_output_theta(base, d=0.3, s=0.2)
    # one fixed gradient and fixed params: the two rules see the same statistics
    params = _params()
    g = jax.grad(lambda p: _loss(p, _X))(params)
    sb, sc = base.optimizer(theta, 40).init(params), cos.optimizer(theta, 40).init(params)
    for t in range(1, 41):
        ub, sb = base.optimizer(theta, 40).update(g, sb, params, value=jnp.asarray(0.5))
        uc, sc = cos.optimizer(theta, 40).update(g, sc, params, value=jnp.asarray(0.5))
        factor = 0.5 * (1 + math.cos(math.pi * (t - 1) / 40))
        np.testing.assert_allclose(uc["w"], factor * np.asarray(ub["w"]), rtol=1e-4, atol=1e-12)
    assert factor < 2e-3


def test_invariant_to_loss_scale():
    lo = MLPLOpt()
    theta = lo.init(jax.random.key(5))
    theta["layer1"]["w"] = jax.random.normal(jax.random.key(6), (32, 2), jnp.float32) * 0.3
    opt = lo.optimizer(theta, 30)
    _, u1, _ = _run(opt, _params(), 5)
    _, u2, _ = _run(opt, _params(), 5, loss_scale=1000.0)
    for a, b in zip(u1, u2, strict=True):
        for k in a:
            np.testing.assert_allclose(np.asarray(a[k]), np.asarray(b[k]), rtol=1e-3, atol=1e-7)


@pytest.mark.parametrize("layout", ["flat", "per_tensor"])
def test_a_nan_loss_gives_nan_steps_and_an_infinite_one_does_not(layout):
    """The flat layout's MLP sits behind a conditional whose other branch answers a NaN
    loss feature with NaN steps: what the MLP itself gives then (its bias is NaN), as the
    per-tensor layout, which has no conditional, shows. An infinite loss after a finite
    one is not NaN (its loss feature is tanh(∞) = 1): the MLP runs, the steps are finite."""
    lo = MLPLOpt()
    theta = lo.init(jax.random.key(5))
    theta["layer1"]["w"] = jax.random.normal(jax.random.key(6), (32, 2), jnp.float32) * 0.3
    opt = lo.optimizer(theta, 30, layout=layout)
    params = _params()
    _, _, state = _run(opt, params, 3)
    g = jax.grad(lambda p: _loss(p, _X))(params)
    nan_steps, _ = opt.update(g, state, params, value=jnp.float32(jnp.nan))
    assert all(np.isnan(np.asarray(x)).all() for x in jax.tree_util.tree_leaves(nan_steps))
    inf_steps, _ = opt.update(g, state, params, value=jnp.float32(jnp.inf))
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree_util.tree_leaves(inf_steps))


def test_jit_does_not_recompile():
    lo = MLPLOpt()
    opt = lo.optimizer(lo.init(jax.random.key(0)), 10)
    traces = []

    @jax.jit
    def step(params, state):
        traces.append(1)
        v, g = jax.value_and_grad(lambda p: _loss(p, _X))(params)
        u, state = opt.update(g, state, params, value=v)
        return optax.apply_updates(params, u), state

    params = _params()
    state = opt.init(params)
    for _ in range(3):
        params, state = step(params, state)
    assert len(traces) == 1


def test_traced_num_steps_and_theta():
    lo = MLPLOpt()
    theta = lo.init(jax.random.key(0))
    params = _params()

    @jax.jit
    def one(theta, n):
        opt = lo.optimizer(theta, n)
        v, g = jax.value_and_grad(lambda p: _loss(p, _X))(params)
        u, _ = opt.update(g, opt.init(params), params, value=v)
        return u

    u = one(theta, jnp.asarray(10, jnp.int32))
    assert np.isfinite(np.asarray(u["w"])).all()


def test_inside_hub_with_value():
    lo = MLPLOpt()
    tx = hubopt.hub(optax.adam(1e-3), lo.optimizer(lo.init(jax.random.key(0)), 20))
    params = _params()
    state = tx.init(params)
    loss0 = float(_loss(params, _X))
    step = jax.jit(
        lambda p, s: (
            lambda v, g: (lambda u, s2: (optax.apply_updates(p, u), s2))(
                *tx.update(g, s, p, value=v)
            )
        )(*jax.value_and_grad(lambda q: _loss(q, _X))(p))
    )
    for _ in range(20):
        params, state = step(params, state)
    assert float(_loss(params, _X)) < loss0
    with pytest.raises(TypeError, match="value"):
        tx.update(jax.grad(lambda q: _loss(q, _X))(params), state, params)


def test_bad_inputs():
    lo = MLPLOpt()
    theta = lo.init(jax.random.key(0))
    with pytest.raises(ValueError, match="num_steps"):
        lo.optimizer(theta, 0)
    with pytest.raises(ValueError, match="theta"):
        MLPLOpt(hidden_sizes=(8,)).optimizer(theta, 10)
    with pytest.raises(ValueError, match="momentum_decays"):
        MLPLOpt(momentum_decays=(1.5,))
    opt = lo.optimizer(theta, 10)
    params = _params()
    with pytest.raises(TypeError, match="MLPLOpt needs the params"):
        opt.update(params, opt.init(params), None, value=1.0)


def test_theta_checkpoint_round_trip(tmp_path):
    ckpt = pytest.importorskip("hubopt.learned.checkpoint")
    lo = MLPLOpt()
    theta = lo.init(jax.random.key(2))
    path = tmp_path / "theta.msgpack"
    ckpt.write_checkpoint(path, theta, gen_id="mlp_lopt_test", step=7)
    back = ckpt.read_checkpoint(path)
    assert back["gen_id"] == "mlp_lopt_test" and back["step"] == 7
    for a, b in zip(
        jax.tree_util.tree_leaves(theta), jax.tree_util.tree_leaves(back["params"]), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # the loaded theta drives the optimizer to the same update
    p = _params()
    _, u1, _ = _run(lo.optimizer(theta, 10), p, 2)
    _, u2, _ = _run(lo.optimizer(jax.tree_util.tree_map(jnp.asarray, back["params"]), 10), p, 2)
    np.testing.assert_array_equal(np.asarray(u1[-1]["w"]), np.asarray(u2[-1]["w"]))
