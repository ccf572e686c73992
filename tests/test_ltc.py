"""The LTC cell (`hubopt.tasks.models.ltc`) against ncps's LTC: golden outputs, wirings,
the softplus reparametrisation, initialisation, training and input checks."""

import functools
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hubopt.tasks.models import ltc

SHARED_LTC = Path(__file__).resolve().parents[1].parent / "shared" / "ltc"
GOLDEN_CASES = ("sine_ncp8", "lane_ncp19")
F32_EPS = float(np.finfo(np.float32).eps)


def load_golden(case):
    """The golden arrays of one case; a missing copy of the shared data is a failure."""
    path = SHARED_LTC / f"ltc_golden_{case}.npz"
    if not path.is_file():
        pytest.fail(
            f"LTC golden data not found at {path}: the tests need the shared folder "
            f"'shared/ltc/' beside the repository (CI puts a copy there)"
        )
    with np.load(path) as data:
        return {name: data[name] for name in data.files}


def reference_weights(golden):
    return {name[len("w_") :]: golden[name] for name in golden if name.startswith("w_")}


def masks_of(golden):
    return ltc.LTCMasks(
        jnp.asarray(golden["adjacency"]),
        jnp.asarray(golden["sensory_adjacency"]),
        int(golden["w_output_w"].shape[0]),
    )


@pytest.fixture(scope="module")
def small():
    """A random 8-unit, 3-input, 2-motor cell (not an NCP: a dense random sign pattern)."""
    rng = np.random.default_rng(0)
    adjacency = rng.choice([-1.0, 0.0, 1.0], size=(8, 8)).astype(np.float32)
    sensory = rng.choice([-1.0, 0.0, 1.0], size=(3, 8)).astype(np.float32)
    masks = ltc.LTCMasks(jnp.asarray(adjacency), jnp.asarray(sensory), 2)
    params = ltc.init_ltc(jax.random.key(0), adjacency, sensory, 2)
    x = jnp.asarray(rng.normal(size=(2, 5, 3)), jnp.float32)
    return params, masks, x


@pytest.fixture(scope="module")
def sine_problem():
    """An NCP(8, 1) fitting sin(2t) from (sin t, cos t), with one jitted Adam step
    `train_step(params, opt_state) -> (params, opt_state, loss, grads)`, compiled once."""
    adjacency, sensory = ltc.ncp_wiring(8, 1, 2, 22222)
    masks = ltc.LTCMasks(jnp.asarray(adjacency), jnp.asarray(sensory), 1)
    params = ltc.init_ltc(jax.random.key(0), adjacency, sensory, 1)
    t = np.linspace(0.0, 3 * np.pi, 24, dtype=np.float32)
    x = jnp.asarray(np.stack([np.sin(t), np.cos(t)], axis=-1)[None])  # (1, 24, 2)
    target = jnp.asarray(np.sin(2 * t)[None, :, None])  # (1, 24, 1)
    optimizer = optax.adam(0.02)

    def loss(p):
        y, _ = ltc.ltc_sequence(p, masks, x)
        return jnp.mean((y - target) ** 2)

    @jax.jit
    def train_step(p, opt_state):
        value, grads = jax.value_and_grad(loss)(p)
        updates, opt_state = optimizer.update(grads, opt_state, p)
        return optax.apply_updates(p, updates), opt_state, value, grads

    return masks, params, train_step, optimizer


# ---------------------------------------------------------------- 1. golden outputs


@pytest.mark.parametrize("case", GOLDEN_CASES)
def test_golden_outputs(case):
    golden = load_golden(case)
    meta = json.loads((SHARED_LTC / "ltc_golden.json").read_text())["cases"][case]
    params = ltc.constrained_from_reference(reference_weights(golden))
    run = jax.jit(
        functools.partial(
            ltc.ltc_sequence,
            elapsed_time=meta["elapsed_time"],
            ode_unfolds=meta["ode_unfolds"],
            epsilon=meta["epsilon"],
        )
    )
    y, h_seq = run(params, masks_of(golden), jnp.asarray(golden["x"]))
    assert y.shape == golden["y"].shape and h_seq.shape == golden["h_seq"].shape
    np.testing.assert_allclose(h_seq, golden["h_seq"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(y, golden["y"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(h_seq[:, -1], golden["h_last"], rtol=0, atol=1e-5)
    # The state is not trivially small: a wrong formula would show.
    assert np.abs(golden["h_seq"]).max() > 0.5


@pytest.mark.parametrize("case", GOLDEN_CASES)
def test_golden_step_by_step_matches_sequence(case):
    golden = load_golden(case)
    params = ltc.constrained_from_reference(reference_weights(golden))
    masks = masks_of(golden)
    x = jnp.asarray(golden["x"])
    h = jnp.zeros(golden["h_last"].shape, jnp.float32)
    step = jax.jit(ltc.ltc_step)
    for t in range(4):
        y, h = step(params, masks, h, x[:, t])
        np.testing.assert_allclose(h, golden["h_seq"][:, t], rtol=0, atol=1e-5)
        np.testing.assert_allclose(y, golden["y"][:, t], rtol=0, atol=1e-5)


@pytest.mark.parametrize("case", GOLDEN_CASES)
def test_reference_conversion_round_trips(case):
    golden = load_golden(case)
    ref = reference_weights(golden)
    back = ltc.constrained_values(ltc.constrained_from_reference(ref))
    for name in ltc.REFERENCE_NAMES:
        np.testing.assert_allclose(back[name], ref[name], rtol=4 * F32_EPS, atol=0, err_msg=name)


# ---------------------------------------------------------------- 2. wirings


@pytest.mark.parametrize(("case", "units", "inputs"), [("sine_ncp8", 8, 3), ("lane_ncp19", 19, 32)])
def test_ncp_wiring_matches_golden(case, units, inputs):
    golden = load_golden(case)
    adjacency, sensory = ltc.ncp_wiring(units, 1, inputs, 22222)
    assert adjacency.dtype == np.float32 and sensory.dtype == np.float32
    np.testing.assert_array_equal(adjacency, golden["adjacency"])
    np.testing.assert_array_equal(sensory, golden["sensory_adjacency"])
    assert np.abs(adjacency).sum() > 0 and np.abs(sensory).sum() > 0


def test_ncp_wiring_without_ncps_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "ncps", None)
    monkeypatch.setitem(sys.modules, "ncps.wirings", None)
    with pytest.raises(ImportError, match="pip install ncps"):
        ltc.ncp_wiring(8, 1, 3, 22222)


# ---------------------------------------------------------------- 3. reparametrisation


def test_inverse_softplus_round_trip():
    values = jnp.asarray(np.geomspace(1e-6, 50.0, 4001), jnp.float32)
    back = jax.nn.softplus(ltc.inverse_softplus(values))
    # The raw value of 1e-6 is about -13.8, whose float32 rounding (~1e-6 absolute)
    # becomes a relative error of ~1e-6 after softplus: 16 ulps covers it.
    np.testing.assert_allclose(back, values, rtol=16 * F32_EPS, atol=0)
    # Large values: raw == value to rounding (no overflow of expm1).
    np.testing.assert_allclose(ltc.inverse_softplus(jnp.float32(50.0)), 50.0, rtol=F32_EPS)
    # Zero and negatives have no preimage: floored, finite, very negative.
    edge = ltc.inverse_softplus(jnp.asarray([0.0, -3.0, 1e-45], jnp.float32))
    assert np.all(np.isfinite(edge)) and np.all(edge < -80)


def test_reference_conversion_floors_zero_weights():
    golden = load_golden("sine_ncp8")
    ref = reference_weights(golden)
    ref["w"] = np.where(np.arange(ref["w"].size).reshape(ref["w"].shape) % 2 == 0, 0.0, ref["w"])
    params = ltc.constrained_from_reference(ref, min_value=1e-6)
    assert np.all(np.isfinite(params["w_raw"]))
    w = ltc.constrained_values(params)["w"]
    np.testing.assert_allclose(np.asarray(w)[ref["w"] == 0], 1e-6, rtol=1e-5)


def test_constrained_values_stay_nonnegative_and_gradients_finite(sine_problem):
    masks, params, train_step, optimizer = sine_problem
    # An arbitrary, large negative update to the four raw parameters.
    rng = np.random.default_rng(10)
    pushed = dict(params)
    for name in (f"{n}_raw" for n in ltc.POSITIVE_PARAMS):
        pushed[name] = params[name] - 1e3 * (1.0 + np.abs(rng.normal(size=params[name].shape)))
    for p in (params, pushed):
        values = ltc.constrained_values(p)
        for name in ltc.POSITIVE_PARAMS:
            assert np.all(np.asarray(values[name]) >= 0), name
        updated, _, value, grads = train_step(p, optimizer.init(p))
        assert np.isfinite(value)
        for name, g in grads.items():
            assert np.all(np.isfinite(g)), name
            assert np.all(np.isfinite(updated[name])), name
        if p is params:  # at the ordinary init the raw parameters do get a gradient
            for name in ("gleak_raw", "cm_raw", "w_raw", "sensory_w_raw"):
                assert np.abs(grads[name]).max() > 0, name


# ---------------------------------------------------------------- 4. initialisation


def test_init_statistics():
    rng = np.random.default_rng(1)
    units, inputs, motor = 120, 40, 3
    adjacency = rng.choice([-1.0, 0.0, 1.0], size=(units, units)).astype(np.float32)
    sensory = rng.choice([-1.0, 0.0, 1.0], size=(inputs, units)).astype(np.float32)
    params = ltc.init_ltc(jax.random.key(3), adjacency, sensory, motor)
    assert set(params) == set(ltc.PARAM_NAMES)
    assert all(v.dtype == jnp.float32 for v in params.values())
    values = ltc.constrained_values(params)
    for name, (low, high) in ltc.INIT_RANGES.items():
        v = np.asarray(values[name])
        width = high - low
        slack = 8 * F32_EPS * max(abs(low), abs(high))
        assert v.min() >= low - slack and v.max() <= high + slack, (name, v.min(), v.max())
        assert v.min() < low + 0.1 * width and v.max() > high - 0.1 * width, name
        assert abs(v.mean() - (low + high) / 2) < 0.1 * width, name
    # The four positive ones are stored raw: not equal to their constrained values.
    assert not np.allclose(params["gleak_raw"], values["gleak"])
    np.testing.assert_array_equal(params["erev"], np.sign(adjacency))
    np.testing.assert_array_equal(params["sensory_erev"], np.sign(sensory))
    np.testing.assert_array_equal(params["input_w"], np.ones(inputs))
    np.testing.assert_array_equal(params["input_b"], np.zeros(inputs))
    np.testing.assert_array_equal(params["output_w"], np.ones(motor))
    np.testing.assert_array_equal(params["output_b"], np.zeros(motor))
    # Different keys give different draws.
    other = ltc.init_ltc(jax.random.key(4), adjacency, sensory, motor)
    assert not np.allclose(other["sigma"], params["sigma"])


def test_init_erev_is_the_ncp_adjacency():
    golden = load_golden("sine_ncp8")
    params = ltc.init_ltc(
        jax.random.key(0), golden["adjacency"], golden["sensory_adjacency"], motor=1
    )
    # ncps copies the adjacency matrices into erev, and so does the golden reference.
    np.testing.assert_array_equal(params["erev"], golden["w_erev"])
    np.testing.assert_array_equal(params["sensory_erev"], golden["w_sensory_erev"])
    nonzero = golden["adjacency"] != 0
    np.testing.assert_array_equal(
        np.asarray(params["erev"])[nonzero], np.sign(golden["adjacency"][nonzero])
    )


# ---------------------------------------------------------------- the cell's plumbing


def test_output_is_the_first_motor_units(small):
    params, masks, x = small
    params = dict(params, output_w=jnp.asarray([2.0, -0.5]), output_b=jnp.asarray([0.1, 0.3]))
    y, h_seq = ltc.ltc_sequence(params, masks, x)
    assert y.shape == (2, 5, 2) and h_seq.shape == (2, 5, 8)
    expected = h_seq[:, :, :2] * params["output_w"][None, None, :] + params["output_b"][None, None]
    np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-7)


def test_elapsed_time_and_initial_state(small):
    params, masks, x = small
    y_scalar, h_scalar = ltc.ltc_sequence(params, masks, x, elapsed_time=1.0)
    y_array, h_array = ltc.ltc_sequence(params, masks, x, elapsed_time=jnp.ones((2, 5)))
    np.testing.assert_array_equal(h_scalar, h_array)
    np.testing.assert_array_equal(y_scalar, y_array)
    # A longer elapsed time changes the result; per-example times act per example.
    dt = jnp.asarray([[1.0] * 5, [3.0] * 5])
    _, h_mixed = ltc.ltc_sequence(params, masks, x, elapsed_time=dt)
    np.testing.assert_array_equal(h_mixed[0], h_scalar[0])
    assert not np.allclose(h_mixed[1], h_scalar[1])
    # h0 is honoured: continuing from the state after 2 steps equals the full run.
    _, h_first = ltc.ltc_sequence(params, masks, x[:, :2])
    y_rest, h_rest = ltc.ltc_sequence(params, masks, x[:, 2:], h0=h_first[:, -1])
    np.testing.assert_allclose(h_rest, h_scalar[:, 2:], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(y_rest, y_scalar[:, 2:], rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------- 5. training


def test_jit_grad_and_adam_reduce_a_sine_fitting_loss(sine_problem):
    _, params, train_step, optimizer = sine_problem
    opt_state = optimizer.init(params)
    losses = []
    for _ in range(101):  # cheap once compiled; the last call only reports the loss
        params, opt_state, value, _ = train_step(params, opt_state)
        losses.append(float(value))
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.5 * losses[0], (losses[0], losses[-1])


# ---------------------------------------------------------------- 6. bad inputs


def test_bad_inputs_raise_clear_errors(small):
    params, masks, x = small
    with pytest.raises(ValueError, match="3-D"):
        ltc.ltc_sequence(params, masks, x[:, 0])
    with pytest.raises(ValueError, match="input features"):
        ltc.ltc_sequence(params, masks, x[:, :, :2])
    with pytest.raises(ValueError, match="h0 must have shape"):
        ltc.ltc_sequence(params, masks, x, h0=jnp.zeros((2, 7)))
    with pytest.raises(ValueError, match="elapsed_time"):
        ltc.ltc_sequence(params, masks, x, elapsed_time=jnp.ones((5, 2)))
    with pytest.raises(ValueError, match="ode_unfolds"):
        ltc.ltc_sequence(params, masks, x, ode_unfolds=0)
    with pytest.raises(ValueError, match="ode_unfolds"):
        ltc.ltc_sequence(params, masks, x, ode_unfolds=6.0)
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 3\)"):
        ltc.ltc_step(params, masks, jnp.zeros((2, 8)), x)
    with pytest.raises(ValueError, match="h must have shape"):
        ltc.ltc_step(params, masks, jnp.zeros((3, 8)), x[:, 0])

    # Masks that do not fit the params.
    other_masks = ltc.LTCMasks(jnp.ones((9, 9)), jnp.ones((3, 9)), 2)
    with pytest.raises(ValueError, match="params do not match the masks"):
        ltc.ltc_sequence(params, other_masks, x)
    with pytest.raises(ValueError, match="output_w"):
        ltc.ltc_sequence(params, ltc.LTCMasks(masks.adjacency, masks.sensory_adjacency, 1), x)
    with pytest.raises(ValueError, match="motor must be in"):
        ltc.ltc_sequence(params, ltc.LTCMasks(masks.adjacency, masks.sensory_adjacency, 9), x)
    with pytest.raises(ValueError, match="sensory_adjacency must have shape"):
        ltc.ltc_sequence(params, ltc.LTCMasks(masks.adjacency, jnp.ones((3, 7)), 2), x)
    with pytest.raises(ValueError, match="missing"):
        ltc.ltc_sequence({k: v for k, v in params.items() if k != "mu"}, masks, x)

    # init_ltc's wiring checks.
    with pytest.raises(ValueError, match="motor must be in"):
        ltc.init_ltc(jax.random.key(0), np.ones((4, 4)), np.ones((2, 4)), 5)
    with pytest.raises(ValueError, match="motor must be in"):
        ltc.init_ltc(jax.random.key(0), np.ones((4, 4)), np.ones((2, 4)), 0)
    with pytest.raises(ValueError, match="square"):
        ltc.init_ltc(jax.random.key(0), np.ones((4, 5)), np.ones((2, 4)), 1)

    # Reference conversion checks.
    golden = load_golden("sine_ncp8")
    ref = reference_weights(golden)
    with pytest.raises(ValueError, match="missing"):
        ltc.constrained_from_reference({k: v for k, v in ref.items() if k != "cm"})
    with pytest.raises(ValueError, match=">= 0"):
        ltc.constrained_from_reference(dict(ref, gleak=-ref["gleak"]))
