"""Sweeps: grids of runs that resume from their records, survive SIGKILL, and give the same
records on every executor."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from hubopt.bench import cli, records, sweep
from hubopt.bench.sweep import Point
from hubopt.tasks import get_task, task_names

STAND_IN_HUB = "hub:adam+stand-in(opt=adamax)"
GRID = [
    Point("nonconvex_l1cos", opt, seed, "tiny", steps=5)
    for opt in ("adam", STAND_IN_HUB)
    for seed in (0, 1)
]


def _bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.json"))}


def test_smoke_preset_is_every_task_at_tiny_size():
    points = sweep.preset_points("smoke")
    assert {p.task for p in points} == set(task_names())
    assert {p.opt for p in points} == set(sweep.SMOKE_OPTIMIZERS)
    assert {p.size for p in points} == {"tiny"} and {p.seed for p in points} == {0}
    assert {p.evals for p in points} == {sweep.SMOKE_EVALS}  # middle and end only
    assert len(sweep.preset_points("smoke", seeds=2)) == 2 * len(points)
    with pytest.raises(ValueError, match="unknown sweep preset 'table9'"):
        sweep.preset_points("table9")
    with pytest.raises(ValueError, match="positive number of seeds"):
        sweep.preset_points("smoke", seeds=0)


def test_grids_run_seed_by_seed():
    """An interrupted sweep has every contender at its first seeds, not one task done."""
    grid = sweep.grid_points(["nonconvex_l1cos", "sine_lstm"], ["adam", "small"], 2, "tiny")
    seeds = [p.seed for p in grid]
    assert seeds == sorted(seeds) and seeds.count(0) == 4
    assert [(p.task, p.opt) for p in grid[:4]] == [(p.task, p.opt) for p in grid[4:]]
    for points in (sweep.preset_points("table3", size="tiny"), sweep.demo_points(2)):
        seeds = [p.seed for p in points]
        assert seeds == sorted(seeds) and len(set(seeds)) > 1


def test_paper_presets_hold_the_tuned_grid_and_the_papers_contenders():
    from hubopt.bench.spec_language import parse

    points = sweep.preset_points("table3", size="tiny")
    task = get_task("carracing_lstm", "tiny")
    opts = {p.opt for p in points}
    rates = {parse(o, task).to_dict()["learning_rate"] for o in opts if o.startswith("preset")}
    assert rates == set(task.lr_grid) and task.hand["learning_rate"] in rates
    assert {"small", "lgl2o:preset+small", "hub:preset+small"} <= opts
    # ≥ 5 seeds where a run is cheap (issue 16): Fig. 2 and Tables 2–4; 3 for Tables 1 and 5
    assert {p.seed for p in points} == set(range(5)) and {p.task for p in points} == {task.name}
    seeds = {name: spec[2] for name, spec in sweep.TABLES.items()}
    assert seeds == {"figure2": 5, "table1": 3, "table2": 5, "table3": 5, "table4": 5, "table5": 3}
    figure2 = sweep.preset_points("figure2", size="tiny", seeds=2)
    assert {p.seed for p in figure2} == {0, 1}
    assert any(",clip=" in p.opt for p in figure2)
    ablations = {p.opt for p in sweep.preset_points("ablations", size="tiny", seeds=1)}
    assert {"blend:preset+small,lam=0.25", "hub:preset+small,mode=inverted"} <= ablations
    for name in sweep.TABLES:  # every preset's specs parse against its tasks
        for task_name in sweep.TABLES[name][0]:
            if task_name in task_names():
                for opt in [*sweep.PAPER_CONTENDERS, *sweep.TABLES[name][1]]:
                    parse(opt, get_task("nonconvex_l1cos", "tiny"))


def test_a_sweep_writes_one_record_per_point_and_reruns_reuse_them(tmp_path):
    paths = sweep.run_sweep(GRID, str(tmp_path))
    assert len(set(paths)) == len(GRID)
    recs = [records.read(p) for p in paths]
    assert [(r["seed"], r["num_steps"]) for r in recs] == [(p.seed, 5) for p in GRID]
    assert recs[2]["optimizer"]["learned"]["is_learned"] is False  # the stand-in says so
    before = _bytes(tmp_path)
    start = time.perf_counter()
    assert sweep.run_sweep(GRID, str(tmp_path)) == paths
    assert _bytes(tmp_path) == before  # nothing retrained, nothing rewritten
    assert time.perf_counter() - start < 30


def test_an_unreadable_record_is_moved_aside_and_its_run_redone(tmp_path, capsys):
    (path,) = sweep.run_sweep(GRID[:1], str(tmp_path))
    Path(path).write_text('{"schema": "damaged')
    (again,) = sweep.run_sweep(GRID[:1], str(tmp_path))
    assert again == path and records.read(path)["seed"] == 0
    assert Path(path + ".damaged").read_text() == '{"schema": "damaged'
    assert "unreadable" in capsys.readouterr().err


def test_process_executor_gives_the_same_records_as_local(tmp_path):
    local = sweep.run_sweep(GRID, str(tmp_path / "local"))
    spawned = sweep.run_sweep(GRID, str(tmp_path / "process"), executor="process", workers=2)
    assert [Path(p).name for p in local] == [Path(p).name for p in spawned]
    for a, b in zip(local, spawned, strict=True):
        ra, rb = records.read(a), records.read(b)
        assert ra["curve"] == rb["curve"] and ra["metrics"] == rb["metrics"]


_KILLABLE = """
import sys
from hubopt.bench import sweep
points = [sweep.Point("nonconvex_l1cos", opt, seed, "tiny", steps=steps)
          for opt, steps in (("adam", 5), ("adamax", 3000), ("adamw", 3000))
          for seed in (0, 1, 2)]
if sys.argv[2] == "count":
    print(len(points))
else:
    sweep.run_sweep(points, sys.argv[1])
"""


def test_a_sweep_killed_with_sigkill_resumes_to_one_valid_record_per_point(tmp_path):
    script = tmp_path / "killable.py"
    script.write_text(textwrap.dedent(_KILLABLE))
    out = tmp_path / "records"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    count = int(subprocess.check_output([sys.executable, script, out, "count"], env=env))
    proc = subprocess.Popen([sys.executable, script, out, "run"], env=env)
    try:
        deadline = time.time() + 240
        while len(list(out.glob("*.json"))) < 4 and time.time() < deadline:
            time.sleep(0.05)
            assert proc.poll() is None, "the sweep ended before it could be killed"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finished = _bytes(out)
    assert 4 <= len(finished) < count  # killed mid-sweep
    for name in finished:
        records.read(out / name)  # every record on disk is whole
    # rerun: the finished records are kept byte for byte, the rest are made
    subprocess.run([sys.executable, script, out, "run"], env=env, check=True)
    after = _bytes(out)
    assert len(after) == count
    assert all(after[name] == data for name, data in finished.items())
    keys = {(r["optimizer"]["label"], r["seed"]) for r in (json.loads(b) for b in after.values())}
    assert len(keys) == count


def test_cli_sweep_errors(capsys):
    assert cli.main(["sweep", "table9"]) == 2
    assert "unknown sweep preset" in capsys.readouterr().err
    assert cli.main(["sweep", "smoke", "--workers", "0"]) == 2
    assert "--workers" in capsys.readouterr().err


def test_cli_sweep_runs_a_grid_of_ones_own(tmp_path, capsys):
    out = tmp_path / "grid"
    argv = ["sweep", "--tasks", "nonconvex_l1cos", "--opt", "adam,lr=0.01", "--opt"]
    argv += [STAND_IN_HUB, "--seeds", "2", "--size", "tiny", "--steps", "4", "--out", str(out)]
    assert cli.main(argv) == 0
    recs = [records.read(p) for p in sorted(out.glob("*.json"))]
    assert len(recs) == 4 and {r["seed"] for r in recs} == {0, 1}
    assert {r["num_steps"] for r in recs} == {4}
    assert {r["optimizer"]["spec"]["name"] for r in recs} == {"adam", "hub"}
    assert "4 records" in capsys.readouterr().out
    before = _bytes(out)
    assert cli.main(argv) == 0 and _bytes(out) == before  # the rerun reuses every record


def test_paper_presets_and_ablations_add_hub_at_the_recommended_rule_once_there_is_one(
    monkeypatch,
):
    import hubopt

    monkeypatch.setattr(hubopt, "RECOMMENDED_SIGMA", None)
    plain = {p.opt for p in sweep.preset_points("table4", size="tiny", seeds=1)}
    assert not any(",sigma=" in o for o in plain)
    monkeypatch.setattr(hubopt, "RECOMMENDED_SIGMA", "hyper")
    for mode, suffix in (("default", ""), ("inverted", ",mode=inverted")):
        monkeypatch.setattr(hubopt, "RECOMMENDED_MODE", mode)
        opts = {p.opt for p in sweep.preset_points("table4", size="tiny", seeds=1)}
        assert opts == plain | {"hub:preset+small,sigma=hyper" + suffix}
        ablations = {p.opt for p in sweep.preset_points("ablations", size="tiny", seeds=1)}
        assert "hub:preset+small,sigma=hyper" + suffix in ablations


def test_a_presets_grid_on_some_of_its_tasks_is_its_points_on_those_tasks():
    whole = sweep.preset_points("table2", "tiny", 2)
    some = sweep.preset_tasks(whole, "table2", ["sine_lstm", "carracing_ltc"])
    assert some == [p for p in whole if p.task in ("sine_lstm", "carracing_ltc")]
    assert {p.task for p in some} == {"sine_lstm", "carracing_ltc"} and len(some) < len(whole)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["smoke", "--tasks", "nonconvex_l1cos", "--opt", "adam"], "not both"),
        (["table2", "--tasks", "volume_siren"], "preset 'table2' has no task 'volume_siren'"),
        (["--tasks", "nonconvex_l1cos"], "needs both --tasks and --opt"),
        ([], "give a preset"),
        (["--tasks", "nonconvex_l1cos", "--opt", "adam,lr=fast"], "lr"),
        (["--tasks", "no_such_task", "--opt", "adam"], "unknown task 'no_such_task'"),
        (["smoke", "--steps", "0"], "--steps must be >= 1"),
        (["--tasks", "nonconvex_l1cos", "--opt", "adam", "--seeds", "0"], "positive number"),
        (["smoke", "--learned", "adam"], "the learned slot takes a learned optimizer"),
        (["smoke", "--learned", "velo("], "bad optimizer spec"),
    ],
)
def test_cli_sweep_grid_errors_name_the_problem(argv, message, capsys):
    assert cli.main(["sweep", *argv, "--size", "tiny"]) == 2
    assert message in capsys.readouterr().err


def test_a_hand_written_spec_and_its_text_are_the_same_run(tmp_path):
    """`"clip": None` in a dict spec is no clip, as the spec text's missing clip: one record."""
    from hubopt.bench import runner

    (path,) = sweep.run_sweep(
        [Point("nonconvex_l1cos", STAND_IN_HUB, 0, "tiny", steps=3)], str(tmp_path)
    )
    spec = records.read(path)["optimizer"]["spec"]
    assert "clip" not in spec
    again = runner.train_and_record(
        get_task("nonconvex_l1cos", size="tiny"),
        {**spec, "clip": None},
        num_steps=3,
        seed=0,
        out_dir=str(tmp_path),
        reuse=True,
        log=lambda *_: None,
    )
    assert str(again) == path


def test_ray_executor_gives_the_same_records_as_local(tmp_path):
    import ray  # noqa: F401  (the ray extra; make test installs it, so this never skips)

    local = sweep.run_sweep(GRID, str(tmp_path / "local"))
    on_ray = sweep.run_sweep(GRID, str(tmp_path / "ray"), executor="ray", workers=2)
    assert [Path(p).name for p in local] == [Path(p).name for p in on_ray]
    for a, b in zip(local, on_ray, strict=True):
        ra, rb = records.read(a), records.read(b)
        assert ra["curve"] == rb["curve"] and ra["metrics"] == rb["metrics"]
        assert ra["optimizer"] == rb["optimizer"]


def test_ray_executor_without_ray_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail
    with pytest.raises(ImportError, match=r"pip install 'hubopt\[ray\]'"):
        sweep.run_sweep(GRID[:1], str(tmp_path), executor="ray")


def test_gpus_per_run_are_for_the_ray_executor_only(tmp_path, capsys):
    argv = ["sweep", "--tasks", "nonconvex_l1cos", "--opt", "adam", "--size", "tiny"]
    assert cli.main([*argv, "--gpus-per-run", "1", "--out", str(tmp_path / "x")]) == 2
    assert "--gpus-per-run) is for the ray executor only, not 'local'" in capsys.readouterr().err
    assert cli.main([*argv, "--executor", "ray", "--gpus-per-run", "-1"]) == 2
    assert "--gpus-per-run) must be a number of GPUs >= 0, got -1" in capsys.readouterr().err
    # the flag and the argument are checked by one function, in one voice
    with pytest.raises(ValueError, match=r"gpus_per_run \(--gpus-per-run\) is for the ray"):
        sweep.run_sweep(GRID[:1], str(tmp_path / "x"), executor="process", gpus_per_run=1)
    for bad in ({"workers": 0}, {"overwrite": True}):
        with pytest.raises(ValueError, match="workers|overwrite"):
            sweep.run_sweep(GRID[:1], str(tmp_path / "x"), executor="process", **bad)
    assert cli.main([*argv, "--executor", "process", "--overwrite"]) == 2
    assert "overwrite (--overwrite) is for the local executor only" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_a_ray_without_the_gpus_of_one_run_is_refused_before_anything_runs(tmp_path, capsys):
    import ray

    out = tmp_path / "never"
    argv = ["sweep", "--tasks", "nonconvex_l1cos", "--opt", "adam", "--size", "tiny"]
    argv += ["--executor", "ray", "--gpus-per-run", "1", "--out", str(out)]
    ray.init(num_cpus=1, num_gpus=0, include_dashboard=False, log_to_driver=False)
    try:
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert "each run needs 1 GPU(s) on one node" in err and "most on one node: 0" in err
        assert not out.exists()
        assert ray.is_initialized()  # a Ray the sweep did not start is left running
    finally:
        ray.shutdown()
    # a Ray that declares one GPU (a CPU-only JAX run does not use it) runs one-GPU runs
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        with pytest.raises(sweep.NotEnoughGPUs, match="needs 2 GPU"):
            sweep.run_sweep(GRID[:1], str(out), executor="ray", gpus_per_run=2)
        assert not out.exists()
        on_gpu = sweep.run_sweep(GRID[:2], str(tmp_path / "gpu"), executor="ray", gpus_per_run=1)
    finally:
        ray.shutdown()
    local = sweep.run_sweep(GRID[:2], str(tmp_path / "local"))
    for a, b in zip(local, on_gpu, strict=True):
        ra, rb = records.read(a), records.read(b)
        assert ra["curve"] == rb["curve"]
        assert rb["meta"]["cuda_visible_devices"] == "0"  # the GPU Ray gave the run


def test_a_points_steps_rescale_the_presets_warm_up(tmp_path):
    task = get_task("fmnist_mlp", "tiny")
    steps = 2 * task.num_steps
    (path,) = sweep.run_sweep(
        [Point("fmnist_mlp", "preset", 0, "tiny", steps=steps)], str(tmp_path)
    )
    rec = records.read(path)
    assert rec["num_steps"] == steps
    assert rec["optimizer"]["spec"]["warmup_steps"] == 2 * task.hand["warmup_steps"]


def test_sigma_study_presets_hold_every_rule_in_both_modes_and_the_loss_scales():
    from hubopt import SIGMA_RULES

    opts = {p.opt for p in sweep.preset_points("sigma", size="tiny", seeds=1)}
    for rule in SIGMA_RULES:
        assert {
            f"hub:preset+small,sigma={rule}",
            f"hub:preset+small,sigma={rule},mode=inverted",
        } <= opts
    assert {"small", "lgl2o:preset+small", "blend:preset+small,lam=0.75"} <= opts
    assert any(o.startswith("preset,lr=") for o in opts)  # the tuned baseline's grid
    scale = sweep.preset_points("sigma_scale", size="tiny", seeds=1)
    assert {p.loss_scale for p in scale} == set(sweep.LOSS_SCALES)
    assert {p.task for p in scale} == set(sweep.SCALE_TASKS)
    scale_opts = {p.opt for p in scale}  # every candidate of the choice's scale check
    for rule in SIGMA_RULES:
        assert f"hub:preset+small,sigma={rule},mode=inverted" in scale_opts


def test_a_loss_scaled_point_is_its_own_task_and_adam_does_not_see_the_scale(tmp_path):
    points = [Point("sine_lstm", "adam", 0, "tiny", loss_scale=c) for c in (None, 1e3)]
    plain, scaled = (records.read(p) for p in sweep.run_sweep(points, str(tmp_path)))
    assert scaled["task"]["name"] == "sine_lstm_x1000" and plain["task"]["name"] == "sine_lstm"
    # Adam's step is free of the gradient's scale (up to eps): the same run in task units
    np.testing.assert_allclose(
        scaled["metrics"]["test"]["mse"], plain["metrics"]["test"]["mse"], rtol=1e-3
    )
    np.testing.assert_allclose(
        np.asarray(scaled["curve"]["loss"]), 1e3 * np.asarray(plain["curve"]["loss"]), rtol=1e-3
    )


def test_a_points_evals_reach_its_record_and_leave_the_training_alone(tmp_path):
    many, few = (Point("sine_lstm", "adam", 0, "tiny", evals=k) for k in (None, 2))
    assert str(few).endswith(", 2 evals")
    (a,) = (records.read(p) for p in sweep.run_sweep([many], str(tmp_path / "a")))
    (b,) = (records.read(p) for p in sweep.run_sweep([few], str(tmp_path / "b")))
    n = a["num_steps"]
    assert b["eval"]["step"] == [0, n // 2, n] and len(a["eval"]["step"]) > 3
    assert a["curve"] == b["curve"] and a["metrics"] == b["metrics"]


@pytest.fixture
def velo_cache(tmp_path, monkeypatch):
    """A small but real VeLO checkpoint (H=8, K=2), installed the way a user installs one
    by hand (`hubopt velo download --url file://...`) into a fresh $HUBOPT_CACHE."""
    import jax

    from hubopt.learned import fetch_velo, init_velo_theta, save_velo_theta

    src = save_velo_theta(tmp_path / "src" / "params", init_velo_theta(jax.random.key(0), 8, 2))
    monkeypatch.setenv("HUBOPT_CACHE", str(tmp_path / "cache"))
    size = src.stat().st_size
    return fetch_velo(url=src.as_uri(), expected_size=size, progress=False)


def test_learned_velo_fills_every_learned_slot_and_leaves_the_rest(velo_cache):
    from hubopt.bench.spec_language import parse

    for preset in ("figure2", "ablations"):
        points = sweep.preset_points(preset, size="tiny", seeds=2)
        with_velo = sweep.with_learned(points, "velo")
        assert len(with_velo) == len(points)
        for p, v in zip(points, with_velo, strict=True):
            task = get_task(p.task, "tiny")
            if p.opt.startswith("preset"):  # a hand-designed contender: the same point
                assert v == p and sweep.point_spec(v) == parse(p.opt, task).to_dict()
                continue
            assert (v.task, v.opt, v.seed, v.learned) == (p.task, p.opt, p.seed, "velo")
            # reference: the spec text with the learned optimizer's name swapped
            text = "velo" if p.opt == "small" else p.opt.replace("+small", "+velo")
            assert sweep.point_spec(v) == parse(text, task).to_dict() != sweep.point_spec(p)


def test_learned_velo_runs_the_preset_with_the_cached_checkpoint(velo_cache, tmp_path, capsys):
    from hubopt.learned import velo_cache_path

    assert velo_cache == velo_cache_path()
    out = tmp_path / "figure2"
    argv = ["sweep", "figure2", "--learned", "velo", "--size", "tiny", "--seeds", "1"]
    assert cli.main([*argv, "--steps", "3", "--out", str(out)]) == 0
    recs = records.read_all([out])
    assert len(recs) == len(sweep.preset_points("figure2", size="tiny", seeds=1))
    learned = [r["optimizer"]["learned"] for r in recs if r["optimizer"]["learned"]]
    # velo alone, LGL2O, HUB, clipped HUB, and HUB at the recommended σ once there is one
    assert len(learned) == 4 + (sweep.recommended_contender() is not None)
    sha = velo_cache.with_name("params.sha256").read_text().split()[0]
    assert {(slot["kind"], slot["sha256"]) for slot in learned} == {("velo", sha)}
    assert f"{len(recs)} records" in capsys.readouterr().out


def test_learned_velo_without_its_checkpoint_fails_before_anything_runs(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("HUBOPT_CACHE", str(tmp_path / "empty"))
    out = tmp_path / "never"
    argv = ["sweep", "figure2", "--learned", "velo", "--size", "tiny", "--out", str(out)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "`hubopt velo download`" in err and str(tmp_path / "empty" / "velo" / "params") in err
    assert not out.exists()


def test_a_record_of_another_run_is_refused_unless_overwrite(tmp_path, capsys):
    """The same point at other steps writes to the same file: the sweep stops with the
    runner's message (no traceback, nothing replaced); `--overwrite` reruns and replaces."""
    from hubopt.bench import cli, records

    out = tmp_path / "r"
    base = ["sweep", "--tasks", "nonconvex_l1cos", "--opt", "adam", "--size", "tiny"]
    base += ["--seeds", "1", "--out", str(out), "--no-compile-cache"]
    assert cli.main([*base, "--steps", "3"]) == 0
    (path,) = out.glob("*.json")
    before = path.read_bytes()
    assert cli.main([*base, "--steps", "4"]) == 1
    err = capsys.readouterr().err
    assert "already exists" in err and "--overwrite" in err
    assert path.read_bytes() == before
    assert cli.main([*base, "--steps", "4", "--overwrite"]) == 0
    assert records.read(path)["num_steps"] == 4
    assert cli.main([*base, "--steps", "4", "--overwrite", "--executor", "process"]) == 2
