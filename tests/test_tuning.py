"""The tuned hand baseline: a declared learning-rate grid, chosen on the valid split."""

import json
import math
import sys
from pathlib import Path

import pytest

from hubopt.bench import tuning
from hubopt.tasks import Task, get_task

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import tune_hand  # noqa: E402


def _record(lr, seed, valid, test=0.0):
    return {
        "hyperparameters": {"name": "adam", "learning_rate": lr},
        "seed": seed,
        "metrics": {"valid": {"mse": valid}, "test": {"mse": test}},
    }


def test_grid_specs_change_only_the_learning_rate():
    hand = {"name": "adam", "learning_rate": 0.01, "schedule": "step", "decay_every": 3}
    specs = tuning.grid_specs(hand, (0.1, 0.001))
    assert specs == [{**hand, "learning_rate": 0.1}, {**hand, "learning_rate": 0.001}]
    with pytest.raises(ValueError, match="empty"):
        tuning.grid_specs(hand, ())
    with pytest.raises(ValueError, match="repeated"):
        tuning.grid_specs(hand, (0.1, 0.1))


def test_selection_is_the_best_mean_valid_metric_and_never_reads_test():
    # lr 0.1: valid mean 2.0; lr 0.01: mean 1.5 (best); lr 0.001: mean 3.0.
    # The test numbers favour 0.001 and must not matter.
    recs = [
        _record(0.1, 0, 1.0, test=9),
        _record(0.1, 1, 3.0, test=9),
        _record(0.01, 0, 1.0, test=9),
        _record(0.01, 1, 2.0, test=9),
        _record(0.001, 0, 2.0, test=0),
        _record(0.001, 1, 4.0, test=0),
        _record(0.5, 0, 0.0),  # not in the grid: ignored
    ]
    sel = tuning.select_learning_rate(
        recs, (0.1, 0.01, 0.001), metric="mse", higher_is_better=False, seeds=(0, 1)
    )
    assert sel["learning_rate"] == 0.01 and sel["split"] == "valid"
    row = {r["learning_rate"]: r for r in sel["grid"]}
    assert row[0.01]["mean"] == 1.5 and row[0.01]["std"] == pytest.approx(math.sqrt(0.5))
    assert row[0.1]["valid"] == [1.0, 3.0]
    json.dumps(sel)  # a record
    # higher is better: the largest mean wins
    sel = tuning.select_learning_rate(
        recs, (0.1, 0.01, 0.001), metric="mse", higher_is_better=True, seeds=(0, 1)
    )
    assert sel["learning_rate"] == 0.001


def test_a_diverged_seed_makes_its_rate_ineligible_and_ties_go_to_the_first():
    recs = [
        _record(0.1, 0, 0.1),
        _record(0.1, 1, float("nan")),  # diverged: the best-looking mean must not win
        _record(0.01, 0, 1.0),
        _record(0.01, 1, 1.0),
        _record(0.001, 0, 1.0),
        _record(0.001, 1, 1.0),
    ]
    sel = tuning.select_learning_rate(
        recs, (0.1, 0.01, 0.001), metric="mse", higher_is_better=False, seeds=(0, 1)
    )
    assert sel["learning_rate"] == 0.01
    assert not sel["grid"][0]["eligible"] and math.isnan(sel["grid"][0]["mean"])
    with pytest.raises(ValueError, match="diverged"):
        tuning.select_learning_rate(
            recs[:2], (0.1,), metric="mse", higher_is_better=False, seeds=(0, 1)
        )


def test_missing_or_duplicate_runs_are_errors():
    recs = [_record(0.1, 0, 1.0), _record(0.01, 0, 1.0)]
    with pytest.raises(ValueError, match=r"no record .*\(0.01, 1\)"):
        tuning.select_learning_rate(
            recs + [_record(0.1, 1, 1.0)], (0.1, 0.01), metric="mse",
            higher_is_better=False, seeds=(0, 1),
        )  # fmt: skip
    with pytest.raises(ValueError, match="two records"):
        tuning.select_learning_rate(
            recs + [_record(0.1, 0, 2.0)], (0.1, 0.01), metric="mse",
            higher_is_better=False, seeds=(0,),
        )  # fmt: skip


def test_task_lr_grid_is_validated():
    def make(grid):
        return Task(name="toy_q", init=lambda k: 0.0, loss=lambda p, b: p, num_steps=1,
                    lr_grid=grid)  # fmt: skip

    assert make([1e-3, 1]).lr_grid == (1e-3, 1.0)
    for bad in ([0.0], [-1e-3], ["0.1"], [True]):
        with pytest.raises(ValueError, match="lr_grid"):
            make(bad)


def test_tune_hand_runs_the_grid_and_writes_the_selection(tmp_path, capsys):
    task = get_task("sine_lstm", size="tiny")
    out = tmp_path / "tune"
    assert tune_hand.main(["--out", str(out), "--tasks", "sine_lstm", "--size", "tiny",
                           "--seeds", "0"]) == 0  # fmt: skip
    sel = json.loads((out / "selection__sine_lstm.json").read_text())
    assert [r["learning_rate"] for r in sel["grid"]] == list(task.lr_grid)
    assert sel["learning_rate"] in task.lr_grid and sel["metric"] == "mse"
    assert sel["learning_rate"] == min(sel["grid"], key=lambda r: r["mean"])["learning_rate"]
    assert len(list(out.glob("sine_lstm__*.json"))) == len(task.lr_grid)
    assert "<- chosen" in capsys.readouterr().out
    # rerun: every run is reused, the selection is the same
    assert tune_hand.main(["--out", str(out), "--tasks", "sine_lstm", "--size", "tiny",
                           "--seeds", "0"]) == 0  # fmt: skip
    assert "reusing" in capsys.readouterr().out
    assert json.loads((out / "selection__sine_lstm.json").read_text()) == sel
