"""hubopt.checkpoint: a training state (params, both members' states, HUB's σ rule state,
LGL2O's counters, the step, the PRNG key) saved with orbax and restored in a new process
trains on bit for bit; damaged or missing checkpoints are reported, never loaded."""

import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hubopt.checkpoint as ckpt

HERE = Path(__file__).resolve().parent


def _run(*args):
    out = subprocess.run(
        [sys.executable, str(HERE / "checkpoint_resume.py"), *map(str, args)],
        cwd=HERE.parent,
        env={**os.environ, "PYTHONPATH": str(HERE.parent)},  # this checkout's hubopt
        timeout=600,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-3000:]


def test_training_resumed_in_a_new_process_equals_training_straight_through(tmp_path):
    _run("full", 8, tmp_path / "full.npz")
    _run("part", 3, tmp_path / "ckpt")
    _run("resume", 8, tmp_path / "ckpt", tmp_path / "resumed.npz")
    full, resumed = np.load(tmp_path / "full.npz"), np.load(tmp_path / "resumed.npz")
    assert sorted(full.files) == sorted(resumed.files) and len(full.files) > 20
    for name in full.files:
        assert full[name].dtype == resumed[name].dtype, name
        assert full[name].tobytes() == resumed[name].tobytes(), name


def _state():
    return {
        "w": jnp.arange(6.0).reshape(2, 3),
        "empty": jnp.zeros((0, 4)),  # orbax stores no zero-size arrays: handled here
        "key": jax.random.key(1),
        "nan": jnp.full((2,), jnp.nan),
        "count": jnp.int32(3),
    }


def test_a_state_round_trips_with_keys_empty_arrays_and_nans(tmp_path):
    state = _state()
    assert ckpt.latest_step(tmp_path / "none") is None
    ckpt.save(tmp_path, 4, state)
    back = ckpt.restore(tmp_path, like=state)
    assert ckpt.latest_step(tmp_path) == 4
    assert back["empty"].shape == (0, 4) and back["count"].dtype == jnp.int32
    np.testing.assert_array_equal(
        jax.random.key_data(back["key"]), jax.random.key_data(state["key"])
    )
    np.testing.assert_array_equal(back["w"], state["w"])
    assert np.isnan(np.asarray(back["nan"])).all()


def test_saving_a_step_twice_is_refused_and_keeps_the_first(tmp_path):
    state = _state()
    ckpt.save(tmp_path, 1, state)
    with pytest.raises(ckpt.CheckpointError, match="step 1 is saved already"):
        ckpt.save(tmp_path, 1, dict(state, w=state["w"] + 1))
    np.testing.assert_array_equal(ckpt.restore(tmp_path, like=state)["w"], state["w"])


def test_a_half_written_step_is_never_restored(tmp_path):
    """What a crash mid-save leaves (orbax's temporary folder) is not a step."""
    state = _state()
    ckpt.save(tmp_path, 2, state)
    partial = tmp_path / "5.orbax-checkpoint-tmp-1234"
    partial.mkdir()
    (partial / "junk").write_bytes(b"\x00" * 10)
    assert ckpt.latest_step(tmp_path) == 2
    np.testing.assert_array_equal(ckpt.restore(tmp_path, like=state)["w"], state["w"])


def test_a_damaged_or_missing_checkpoint_is_reported(tmp_path):
    state = _state()
    with pytest.raises(ckpt.CheckpointError, match="no checkpoint"):
        ckpt.restore(tmp_path / "empty", like=state)
    ckpt.save(tmp_path, 3, state)
    with pytest.raises(ckpt.CheckpointError, match="no checkpoint at step 9"):
        ckpt.restore(tmp_path, like=state, step=9)
    with pytest.raises(ckpt.CheckpointError, match="cannot be restored"):
        ckpt.restore(tmp_path, like=dict(state, w=jnp.zeros((5, 5))))  # another shape
    for f in (tmp_path / "3").rglob("*"):  # every data file overwritten with garbage
        if f.is_file() and f.stat().st_size > 0 and "metadata" not in f.name:
            f.write_bytes(b"garbage" * 3)
    with pytest.raises(ckpt.CheckpointError, match="step 3"):
        ckpt.restore(tmp_path, like=state)
