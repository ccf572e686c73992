"""The tuned hand baseline: a declared learning-rate grid, chosen on the valid split."""

import json
import math

import pytest

from hubopt.bench import tuning
from hubopt.tasks import Task, get_task


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


def test_a_tuned_sweep_runs_the_grid_and_the_report_chooses_on_valid(tmp_path, capsys):
    from hubopt.bench import cli, records, report

    task = get_task("sine_lstm", size="tiny")
    out = tmp_path / "tune"
    argv = ["sweep", "--tasks", "sine_lstm", "--opt", "tuned", "--size", "tiny", "--seeds", "2"]
    assert cli.main([*argv, "--out", str(out)]) == 0
    recs = records.read_all([out])
    assert len(recs) == 2 * len(task.lr_grid)
    assert {r["optimizer"]["spec"]["learning_rate"] for r in recs} == set(task.lr_grid)
    ((result, sel),) = report.tuned_results(recs)
    # the choice is the best mean valid metric, computed here by hand from the records
    by_rate = {}
    for r in recs:
        by_rate.setdefault(r["optimizer"]["spec"]["learning_rate"], []).append(
            r["metrics"]["valid"]["mse"]
        )
    best = min(by_rate, key=lambda lr: sum(by_rate[lr]) / 2)
    assert sel["learning_rate"] == best and sel["split"] == "valid" and sel["seeds"] == [0, 1]
    # the tuned row reports the chosen rate's test values, never a choice made on test
    chosen = [r for r in recs if r["optimizer"]["spec"]["learning_rate"] == best]
    assert result.values == tuple(r["metrics"]["test"]["mse"] for r in chosen)
    assert result.label.startswith("tuned adam") and f"lr {best:g}" in result.label
    files = report.report([out], tmp_path / "report")
    assert json.loads(files["tuned"].read_text().splitlines()[0])["learning_rate"] == best
    assert len(records.read_all([tmp_path])) == len(recs)  # the report is not read as records
    assert result.label in files["table_md"].read_text()
    capsys.readouterr()
    assert cli.main([*argv, "--out", str(out)]) == 0  # rerun: every run is reused
    assert len(records.read_all([out])) == len(recs)


def test_no_tuned_row_without_two_rates_over_the_same_seeds():
    from hubopt.bench import report

    def rec(lr, seed):
        return {
            "task": {"name": "t", "metric": "mse", "higher_is_better": False},
            "optimizer": {"label": f"adam@{lr:g}", "spec": {"name": "adam", "learning_rate": lr}},
            "hyperparameters": {"name": "adam", "learning_rate": lr},
            "num_steps": 3,
            "seed": seed,
            "metrics": {"valid": {"mse": lr}, "test": {"mse": lr}},
            "final_loss": lr,
            "best_loss": lr,
            "timing": {"step_time_s": 1e-3},
        }

    assert report.tuned_results([rec(0.1, 0), rec(0.1, 1)]) == []  # one rate
    assert report.tuned_results([rec(0.1, 0), rec(0.01, 1)]) == []  # different seeds
    ((result, sel),) = report.tuned_results([rec(0.1, 0), rec(0.01, 0)])
    assert sel["learning_rate"] == 0.01 and result.values == (0.01,)


def test_the_nonconvex_function_has_a_tuned_baseline_chosen_on_f_itself(tmp_path):
    """figure2's "tuned" contender exists: the grid runs, and with no data the valid metric
    the choice reads is f(x), the same number the table reports."""
    from hubopt.bench import records, report, sweep

    task = get_task("nonconvex_l1cos", size="tiny")
    assert len(task.lr_grid) == 3 and task.hand["learning_rate"] in task.lr_grid
    assert "chosen on f(x) itself" in task.description
    figure2 = {p.opt for p in sweep.preset_points("figure2", size="tiny", seeds=1)}
    assert len([o for o in figure2 if o.startswith("preset")]) == len(task.lr_grid)
    points = sweep.grid_points([task.name], ["tuned"], 1, "tiny")
    recs = [records.read(p) for p in sweep.run_sweep(points, str(tmp_path))]
    assert {r["optimizer"]["spec"]["learning_rate"] for r in recs} == set(task.lr_grid)
    for r in recs:  # valid and test are both f(x) of the final params
        assert r["metrics"]["valid"]["loss"] == r["metrics"]["test"]["loss"]
    ((result, sel),) = report.tuned_results(recs)
    best = min(recs, key=lambda r: r["metrics"]["valid"]["loss"])
    assert sel["learning_rate"] == best["optimizer"]["spec"]["learning_rate"]
    assert result.values == (best["metrics"]["test"]["loss"],)
