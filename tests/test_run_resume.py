"""`hubopt run --resume`: a run stopped after a checkpoint and started again gives the
record of a run never stopped (all but its timings)."""

import json

import pytest

from hubopt.bench import cli, optimizers, records, runner
from hubopt.tasks import nonconvex

TASK = nonconvex.make_task(dim=10, num_steps=200)
SPEC = {
    "name": "hub",
    "hand": {"name": "adam", "learning_rate": 1e-2},
    "learned": {"name": "small"},
    "sigma": "hyper",
}


class Crash(Exception):
    pass


def _run(**kwargs):
    built = optimizers.build(SPEC, TASK.num_steps)
    out = runner.train(TASK, built, num_steps=TASK.num_steps, seed=1, num_evals=10, **kwargs)
    out.pop("_final_state")
    out.pop("timing")
    return out


def test_a_run_resumed_after_a_crash_equals_a_run_never_stopped(tmp_path, monkeypatch):
    straight = _run()
    save = runner._save_progress
    saves = []

    def crash_after_the_fourth_checkpoint(*args):
        save(*args)
        saves.append(args[1])
        if len(saves) == 4:
            raise Crash

    monkeypatch.setattr(runner, "_save_progress", crash_after_the_fourth_checkpoint)
    with pytest.raises(Crash):
        _run(checkpoint_dir=tmp_path / "ckpt")
    assert saves == [20, 40, 60, 80]
    saves.clear()
    monkeypatch.setattr(runner, "_save_progress", lambda *a: (save(*a), saves.append(a[1])))
    resumed = _run(checkpoint_dir=tmp_path / "ckpt")
    assert saves == [100, 120, 140, 160, 180, 200]  # it went on from step 80
    # as the record would hold it (NaN diagnostics before the first step compare as text)
    assert json.dumps(resumed, sort_keys=True) == json.dumps(straight, sort_keys=True)
    assert resumed["eval"]["step"] == list(range(0, 201, 20))


def test_a_checkpoint_of_another_run_is_refused(tmp_path, monkeypatch):
    save = runner._save_progress

    def crash(*args):
        save(*args)
        raise Crash

    monkeypatch.setattr(runner, "_save_progress", crash)
    with pytest.raises(Crash):
        _run(checkpoint_dir=tmp_path / "ckpt")
    monkeypatch.setattr(runner, "_save_progress", save)
    built = optimizers.build({"name": "adam", "learning_rate": 1e-2}, TASK.num_steps)
    with pytest.raises(ValueError, match="holds a checkpoint of another run"):
        runner.train(
            TASK,
            built,
            num_steps=TASK.num_steps,
            seed=1,
            num_evals=10,
            checkpoint_dir=tmp_path / "ckpt",
        )


def test_cli_run_resume_writes_the_record_and_removes_its_checkpoints(tmp_path):
    out = tmp_path / "runs"
    argv = ["run", "nonconvex_l1cos", "--size", "tiny", "--opt", "adam", "--resume"]
    assert cli.main([*argv, "--out", str(out)]) == 0
    (path,) = sorted(out.glob("*.json"))
    assert records.read(path)["num_steps"] > 0
    assert not (out / ".checkpoints").exists()
