"""JAX's persistent compilation cache for hubopt's commands (`hubopt._src.compile_cache`):
a second process reads back what the first compiled, including a HUB run's training
program (which holds a learned optimizer), and every seed of a run compiles to one
program, read back for the seeds after the first; the cache can be turned off; a folder that
cannot be written leaves it off; a cache the user set for JAX is kept."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from hubopt._src import compile_cache

SWEEP = """
import sys
from jax import monitoring
hits = []
monitoring.register_event_listener(
    lambda name, **kw: hits.append(name) if name == "/jax/compilation_cache/cache_hits" else None
)
from hubopt.bench.cli import main
args = ["sweep", "--opt", "hub:adam+small", "--size", "tiny", "--steps", "4",
        "--out", sys.argv[1], *sys.argv[2:]]
assert main(args) == 0
print("HITS", len(hits))
"""

MINIBATCH_TASK = "synreg_mlp48gelub32"  # a small task whose batches the seed draws


def _sweep(
    out: Path, cache: str, *flags: str, seeds: int = 1, task: str = "nonconvex_l1cos"
) -> int:
    env = {**os.environ, "HUBOPT_COMPILE_CACHE": cache, "JAX_PLATFORMS": "cpu"}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    done = subprocess.run(
        [sys.executable, "-c", SWEEP, str(out), "--seeds", str(seeds), "--tasks", task, *flags],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return int(done.stdout.split("HITS")[-1])


def _programs(cache: Path) -> list[str]:
    """The programs in the cache (each a `<name>-<key>-cache` file)."""
    return sorted(p.name for p in cache.iterdir() if p.name.endswith("-cache"))


def test_a_second_sweep_reads_back_what_the_first_compiled(tmp_path):
    cache = tmp_path / "xla"
    # a fresh cache, two seeds in one process, on a task with minibatches: the seed's
    # data key is an argument of the training program, not a constant in it, so both
    # seeds compile to one program, the second seed reads it back, and the second seed's
    # run is still its own
    hits_first = _sweep(tmp_path / "first", str(cache), seeds=2, task=MINIBATCH_TASK)
    written = _programs(cache)
    # the training chunk holds HUB(Adam, bundled optimizer): cacheable because the runner
    # builds the learned optimizer without its host-callback warning past the budget
    chunks = [name for name in written if name.startswith("jit_chunk-")]
    assert len(chunks) == 1, written
    seed0, seed1 = (
        json.loads(next((tmp_path / "first").glob(f"*seed{s}.json")).read_text()) for s in (0, 1)
    )
    assert seed0["curve"] != seed1["curve"]  # one program, each seed's own batches
    hits = _sweep(tmp_path / "second", str(cache), task=MINIBATCH_TASK)
    # every program written is read back by the next process: more than the first
    # process read back of its own (only the second seed's)
    assert hits >= len(written) > hits_first >= 1
    # nothing written before was compiled again (the set may grow: what compiles faster
    # than the threshold in one process and slower in another)
    assert set(written) <= set(_programs(cache))
    assert chunks == [name for name in _programs(cache) if name.startswith("jit_chunk-")]
    second = json.loads(next((tmp_path / "second").glob("*seed0.json")).read_text())
    assert seed0["curve"] == second["curve"]  # a program read back computes the same


def test_the_cache_can_be_turned_off(tmp_path):
    cache = tmp_path / "xla"
    assert _sweep(tmp_path / "off", str(cache), "--no-compile-cache") == 0
    assert not cache.exists()
    assert _sweep(tmp_path / "env_off", "off") == 0


@pytest.fixture
def no_jax_cache():
    """No compilation cache configured in this process during the test (the session's is
    put back after; JAX keeps using the cache it opened meanwhile)."""
    session = jax.config.jax_compilation_cache_dir
    jax.config.update("jax_compilation_cache_dir", None)
    yield
    jax.config.update("jax_compilation_cache_dir", session)


@pytest.mark.usefixtures("no_jax_cache")
def test_an_unwritable_folder_or_off_leaves_the_cache_off(tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("HUBOPT_COMPILE_CACHE", str(blocker / "xla"))
    assert compile_cache.enable_compile_cache() is None
    monkeypatch.setenv("HUBOPT_COMPILE_CACHE", "off")
    assert compile_cache.enable_compile_cache() is None
    assert not jax.config.jax_compilation_cache_dir


@pytest.mark.usefixtures("no_jax_cache")
def test_a_cache_the_user_set_for_jax_is_kept(tmp_path, monkeypatch):
    own = tmp_path / "own"
    monkeypatch.setenv("HUBOPT_COMPILE_CACHE", str(tmp_path / "ours"))
    jax.config.update("jax_compilation_cache_dir", str(own))
    assert compile_cache.enable_compile_cache() == own
    assert jax.config.jax_compilation_cache_dir == str(own)
    assert not (tmp_path / "ours").exists()


@pytest.mark.parametrize("builder", ["small", "velo"])
def test_learned_optimizers_can_leave_out_their_host_callback(builder):
    """With `warn_past_budget=False` the update's program holds no host callback (what
    JAX's cache refuses to keep); by default it does, and warns past the budget."""
    import jax.numpy as jnp

    from hubopt import learned
    from hubopt.learned.velo_lopt.transform import init_velo_theta

    params = {"w": jnp.ones((3, 2))}

    def make(warn):
        if builder == "velo":
            return learned.velo(2, theta=init_velo_theta(jax.random.key(0)), warn_past_budget=warn)
        return learned.small(num_steps=2, warn_past_budget=warn)

    def hlo(tx):
        state = tx.init(params)
        step = jax.jit(lambda g, s, p: tx.update(g, s, p, value=jnp.float32(1.0)))
        return step.lower(params, state, params).as_text()

    assert "callback" in hlo(make(True))
    assert "callback" not in hlo(make(False))
