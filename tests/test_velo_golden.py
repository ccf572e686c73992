"""VeLO against the reference's golden updates (../shared/velo, VELO_SPEC §7).

Two sets: small (H=32, K=8) and full (the VeLO architecture, H=512, K=256),
8 updates each. Every step is checked twice: started from the golden state,
and chained from `init` through the public optax API. Tolerances are §7's.
"""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hubopt.learned.velo_lopt import _math as vm
from hubopt.learned.velo_lopt.checkpoint import load_velo_theta
from hubopt.learned.velo_lopt.transform import VeloState, velo, velo_apply

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "velo"
SETS = {"small": "velo_golden_small.npz", "full": "velo_golden.npz"}
LEAVES = ["conv/w", "dense/b", "dense/w", "row", "scalar", "sq"]
NUM_STEPS = 100
EPS32 = float(np.finfo(np.float32).eps)

pytestmark = pytest.mark.skipif(
    not SHARED.is_dir(), reason=f"golden VeLO data not found at {SHARED} (../shared/velo)"
)


def _tree(z, prefix):
    g = lambda leaf: jnp.asarray(z[prefix + leaf])  # noqa: E731
    return {
        "conv": {"w": g("conv/w")},
        "dense": {"b": g("dense/b"), "w": g("dense/w")},
        "row": g("row"),
        "scalar": g("scalar"),
        "sq": g("sq"),
    }


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def _golden_state(z, prefix) -> VeloState:
    """The reference State (decay axis last) in hubopt's layout (decay axis first)."""
    first = lambda t: jax.tree_util.tree_map(lambda x: np.moveaxis(x, -1, 0), t)  # noqa: E731
    buf = vm.LossBuffer(
        z[prefix + "loss_buffer/means"],
        z[prefix + "loss_buffer/running_min"],
        z[prefix + "loss_buffer/iteration"],
        z[prefix + "loss_buffer/decays"],
    )
    state = VeloState(
        iteration=z[prefix + "iteration"],
        num_steps=z[prefix + "num_steps"],
        mom=tuple(
            jax.tree_util.tree_map(lambda x, a=a: x[..., a], _tree(z, prefix + "mom_rolling/m/"))
            for a in range(3)
        ),
        rms=jax.tree_util.tree_map(lambda x: x[..., 0], _tree(z, prefix + "rms_rolling/rms/")),
        fac_row=first(_tree(z, prefix + "fac_rolling/v_row/")),
        fac_col=first(_tree(z, prefix + "fac_rolling/v_col/")),
        fac_diag=first(_tree(z, prefix + "fac_rolling/v_diag/")),
        lstm_hidden=z[prefix + "lstm_hidden_state/hidden"],
        lstm_cell=z[prefix + "lstm_hidden_state/cell"],
        loss_buffer=buf,
        accum_grads=(),
        accum_loss=np.float32(0),
        accum_count=np.int32(0),
    )
    return jax.tree_util.tree_map(jnp.asarray, state)  # jax arrays: one jit cache entry


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    if b.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def _accumulators(state: VeloState):
    """(name, per-tensor tree) of every accumulator: 3 momenta, rms, factored R/C/D."""
    out = [(f"mom[{i}]", m) for i, m in enumerate(state.mom)]
    return out + [(f, getattr(state, f)) for f in ("rms", "fac_row", "fac_col", "fac_diag")]


def _check_state(mine: VeloState, ref: VeloState, where: str):
    for (field, mt), (_, rt) in zip(_accumulators(mine), _accumulators(ref), strict=True):
        for leaf, a, b in zip(LEAVES, _leaves(mt), _leaves(rt), strict=True):  # §7: 1e-6 rel
            assert _rel(a, b) <= 1e-6, f"{where}: {field}/{leaf} rel err {_rel(a, b):.2e}"
    for field in ("means", "running_min"):
        a, b = getattr(mine.loss_buffer, field), getattr(ref.loss_buffer, field)
        assert _rel(a, b) <= 1e-6, f"{where}: loss_buffer/{field}"
    np.testing.assert_array_equal(mine.loss_buffer.iteration, ref.loss_buffer.iteration)
    np.testing.assert_array_equal(mine.iteration, ref.iteration)
    np.testing.assert_array_equal(mine.num_steps, ref.num_steps)
    for field in ("lstm_hidden", "lstm_cell"):  # §7: 1e-5 relative
        a, b = getattr(mine, field), getattr(ref, field)
        assert _rel(a, b) <= 1e-5, f"{where}: {field} rel err {_rel(a, b):.2e}"


def _check_params(new_params, z, pre, where):
    for leaf, got in zip(LEAVES, _leaves(new_params), strict=True):
        ref = z[pre + "params_out/" + leaf]
        dref = z[pre + "debug/step/" + leaf]
        tol = 1e-4 * np.max(np.abs(dref)) + 4 * EPS32 * np.max(np.abs(ref))
        assert got.shape == ref.shape and got.dtype == np.float32
        err = np.max(np.abs(got.astype(np.float64) - ref))
        assert err <= tol, f"{where}: params_out/{leaf} err {err:.3e} > tol {tol:.3e}"


@pytest.fixture(scope="module", params=sorted(SETS))
def golden(request):
    name = request.param
    z = dict(np.load(SHARED / name / SETS[name]))
    theta_path = SHARED / name / "params"
    theta = jax.tree_util.tree_map(jnp.asarray, load_velo_theta(theta_path))
    apply = jax.jit(lambda s, p, g, loss: velo_apply(theta, s, p, g, loss))
    return name, z, theta_path, apply


def test_theta_file_matches_npz(golden):
    name, z, theta_path, _ = golden
    theta = load_velo_theta(theta_path)
    flat = {
        "/".join(str(getattr(k, "key", k)) for k in path): v
        for path, v in jax.tree_util.tree_flatten_with_path(theta)[0]
    }
    assert len(flat) == 33  # 14 w0__i + b0 w1 b1 w2 b2, 2 LSTM init, 6 linears x (w, b)
    for key, value in flat.items():
        np.testing.assert_array_equal(value, z["theta/" + key], err_msg=key)


def test_init_state(golden):
    name, z, theta_path, _ = golden
    tx = velo(NUM_STEPS, theta=theta_path)
    state = tx.init(_tree(z, "init_state/params/"))
    ref = _golden_state(z, "init_state/")
    assert len(state.mom) == 3
    for (field, mt), (_, rt) in zip(_accumulators(state), _accumulators(ref), strict=True):
        for leaf, a, b in zip(LEAVES, _leaves(mt), _leaves(rt), strict=True):
            assert a.shape == b.shape, f"{field}/{leaf}: {a.shape} vs {b.shape}"
            assert not np.any(a)
    np.testing.assert_array_equal(state.lstm_hidden, ref.lstm_hidden)  # tiled lstm_init_state
    np.testing.assert_array_equal(state.lstm_cell, ref.lstm_cell)
    assert np.any(state.lstm_hidden)  # the golden init state is not zero
    for field in ("means", "running_min", "decays", "iteration"):
        a, b = getattr(state.loss_buffer, field), getattr(ref.loss_buffer, field)
        assert _rel(a, b) <= 1e-6, field
    assert float(state.loss_buffer.running_min[0]) == 999999995904.0


@pytest.mark.parametrize("step", range(8))
def test_step_from_golden_state(golden, step):
    name, z, _, apply = golden
    pre = f"step_{step:02d}/"
    state = _golden_state(z, "init_state/" if step == 0 else f"step_{step - 1:02d}/state/")
    new_params, new_state, dbg = apply(
        state, _tree(z, pre + "params_in/"), _tree(z, pre + "grads/"), jnp.asarray(z[pre + "loss"])
    )
    where = f"{name} {pre}"
    for i, leaf in enumerate(LEAVES):
        dref = z[pre + "debug/step/" + leaf]
        got = np.asarray(dbg["step"][i]).reshape(dref.shape)
        err = np.max(np.abs(got - dref))
        assert err <= 1e-4 * np.max(np.abs(dref)), f"{where}: step/{leaf} err {err:.2e}"
        eref = z[pre + "debug/exp_arg/" + leaf]
        assert _rel(np.asarray(dbg["exp_arg"][i]).reshape(eref.shape), eref) <= 1e-4
    _check_params(new_params, z, pre, where)
    _check_state(new_state, _golden_state(z, pre + "state/"), where)
    for key in ("lstm_input", "controls", "lr_mult"):
        assert _rel(dbg[key], z[pre + "debug/" + key]) <= 1e-5, f"{where}: {key}"
    assert np.max(np.abs(dbg["loss_features"] - z[pre + "debug/loss_features"])) <= 1e-3
    assert float(dbg["fraction_trained"]) == float(z[pre + "debug/fraction_trained"])


def test_chained_from_init(golden):
    """init -> 8 updates, feeding our own params forward.

    The small set runs through the public optax API (``velo().update``); the
    full set reuses the compiled `velo_apply` of the other tests (one compile).
    """
    name, z, theta_path, apply = golden
    tx = velo(NUM_STEPS, theta=theta_path)
    params = _tree(z, "init_state/params/")
    state = tx.init(params)
    update = jax.jit(tx.update)
    for step in range(8):
        pre = f"step_{step:02d}/"
        grads, loss = _tree(z, pre + "grads/"), jnp.asarray(z[pre + "loss"])
        if name == "small":
            updates, state = update(grads, state, params, value=loss)
            params = jax.tree_util.tree_map(lambda p, u: p + u, params, updates)
        else:
            params, state, _ = apply(state, params, grads, loss)
        where = f"{name} chained {pre}"
        _check_params(params, z, pre, where)
        _check_state(state, _golden_state(z, pre + "state/"), where)
    if name == "small":
        assert update._cache_size() == 1  # one compile for all 8 steps
    else:
        assert apply._cache_size() == 1  # the same executable as the golden-state steps
