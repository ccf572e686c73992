"""XLA's quick-compile flags: set before JAX starts (the smoke sweep's default), carried
into a sweep's worker processes and into every record; refused, with a warning, where
JAX has already started."""

import os
import subprocess
import sys

import jax.numpy as jnp
import pytest

from hubopt._src import quick_compile
from hubopt.bench import records


def _sweep(out, *flags):
    """`hubopt sweep` in a fresh process (JAX not started yet), on one tiny task."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    cmd = [sys.executable, "-m", "hubopt.bench.cli", "sweep", *flags, "--out", str(out)]
    subprocess.run(cmd + ["--no-compile-cache"], env=env, check=True, capture_output=True)
    return [records.read(p) for p in sorted(out.glob("*.json"))]


def test_the_smoke_sweep_compiles_quickly_in_its_workers_and_says_so(tmp_path):
    recs = _sweep(
        tmp_path / "smoke",
        "smoke",
        "--tasks",
        "nonconvex_l1cos",
        "--executor",
        "process",
        "--workers",
        "1",
    )
    assert len(recs) == 3
    for r in recs:  # each ran in a spawned worker, which inherited the flags
        assert r["meta"]["xla_flags"].split() == list(quick_compile.QUICK_COMPILE_FLAGS)
    # another preset, or --no-quick-compile, leaves XLA's flags alone (and out of the record)
    grid = ["--tasks", "nonconvex_l1cos", "--opt", "adam", "--seeds", "1", "--size", "tiny"]
    (plain,) = _sweep(tmp_path / "plain", *grid)
    assert "xla_flags" not in plain["meta"]
    (quick,) = _sweep(tmp_path / "quick", *grid, "--quick-compile")
    assert quick["meta"]["xla_flags"].split() == list(quick_compile.QUICK_COMPILE_FLAGS)
    # the same run either way: the flags change how fast XLA compiles, not what it computes
    # here (up to rounding)
    assert quick["final_loss"] == pytest.approx(plain["final_loss"], rel=1e-4)


def test_after_jax_has_started_the_flags_are_refused_with_a_warning(monkeypatch):
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    jnp.ones(1).block_until_ready()  # JAX's backend is up in this process
    with pytest.warns(UserWarning, match="will not read the quick-compile flags"):
        assert quick_compile.use_quick_compile() is False
    assert "XLA_FLAGS" not in os.environ
    # flags a user set before JAX started count as set
    monkeypatch.setenv("XLA_FLAGS", " ".join(quick_compile.QUICK_COMPILE_FLAGS))
    assert quick_compile.use_quick_compile() is True
