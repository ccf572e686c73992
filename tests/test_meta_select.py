"""Checkpoint selection on meta-validation tasks (hubopt meta-select)."""

import json
import math

import pytest

from hubopt.bench import scoring
from hubopt.bench.cli import main
from hubopt.learned.meta import select
from hubopt.learned.meta import task_distribution as td
from hubopt.tasks.lopt_heldout import KINDS, TEST_NAMES

TASK = "synreg_mlp48gelub32"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A two-step meta-training run (by the CLI, as a user makes one) with two snapshots."""
    out = tmp_path_factory.mktemp("run")
    flags = "--tasks-per-step 1 --num-pairs 2 --trunc-len 5 --horizons 10 --hidden 4"
    flags += " --outer-steps 2 --snapshot-every 1 --relative-correction --quiet"
    args = ["meta-train", "--out", str(out), "--tasks", td.TINY_TASKS[0].name, *flags.split()]
    assert main(args) == 0
    return out


def test_selection_scores_every_snapshot_and_picks_the_best_eligible(run_dir, monkeypatch):
    done = select.select_checkpoint(run_dir, tasks=(TASK,), horizons=(30,), log=lambda *_: None)
    assert set(done["candidates"]) == {"theta_000001.msgpack", "theta_000002.msgpack"}
    for cand in done["candidates"].values():
        (r,) = cand["runs"]
        floor = scoring.FLOOR * r["initial_loss"]
        by_hand = math.log(max(r["final_loss"], floor) / r["initial_loss"])
        assert cand["score"] == pytest.approx(by_hand)
        assert cand["eligible"] == (r["spike_ratio"] <= select.SPIKE_LIMIT and not r["diverged"])
    pool = [n for n, c in done["candidates"].items() if c["eligible"]] or list(done["candidates"])
    assert done["chosen"] == min(pool, key=lambda n: done["candidates"][n]["score"])
    assert json.loads((run_dir / "selection.json").read_text()) == done
    # a second call reuses what is written: no candidate is trained again
    monkeypatch.setattr(select, "_run", lambda *a: pytest.fail("retrained a candidate"))
    assert select.select_checkpoint(run_dir, tasks=(TASK,), horizons=(30,)) == done


def test_the_train_and_valid_criterion_adds_the_valid_losses_log_ratio(run_dir, tmp_path):
    """criterion="train+valid": score = train term + the same term of the valid loss,
    by hand from the stored losses; a selection file of the other criterion is not
    reused; an unknown criterion is refused by name."""
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    done = select.select_checkpoint(
        copy, tasks=(TASK,), horizons=(30,), criterion="train+valid", log=lambda *_: None
    )
    assert done["settings"]["criterion"] == "train+valid"
    for cand in done["candidates"].values():
        (r,) = cand["runs"]
        terms = [
            math.log(max(r[final], scoring.FLOOR * r[start]) / r[start])
            for final, start in [
                ("final_loss", "initial_loss"),
                ("final_valid_loss", "initial_valid_loss"),
            ]
        ]
        assert r["final_valid_loss"] != r["final_loss"]
        assert cand["score"] == pytest.approx(sum(terms))
    with pytest.raises(ValueError, match="criterion must be one of"):
        select.select_checkpoint(copy, tasks=(TASK,), horizons=(30,), criterion="valid")


def test_export_ships_the_chosen_snapshot_with_its_selection(run_dir, tmp_path):
    from hubopt.learned.checkpoint import read_checkpoint
    from hubopt.learned.meta.export import export_bundle

    done = select.select_checkpoint(run_dir, tasks=(TASK,), horizons=(30,), log=lambda *_: None)
    prov = export_bundle(run_dir, tmp_path / "small")
    chosen = read_checkpoint(run_dir / "thetas" / done["chosen"])
    shipped = read_checkpoint(tmp_path / "small.msgpack")
    assert shipped["step"] == chosen["step"] == prov["outer_steps"]
    assert prov["run_outer_steps"] == 2 and "--outer-steps 2" in prov["command"]
    for layer, arrays in chosen["params"].items():
        for k, v in arrays.items():
            assert (shipped["params"][layer][k] == v).all()
    assert prov["selection"]["chosen"] == done["chosen"]
    assert set(prov["selection"]["candidates"]) == set(done["candidates"])


def test_selection_never_reads_test_data(run_dir):
    assert not set(select.selection_tasks()) & set(TEST_NAMES)
    assert all(td.data_role(KINDS[n][0]) != "test" for n in select.selection_tasks())
    with pytest.raises(ValueError, match=r"horizons must be positive step counts, got \(0,\)"):
        select.select_checkpoint(run_dir, tasks=(TASK,), horizons=(0,))
    with pytest.raises(ValueError, match="reads test data"):
        select.select_checkpoint(run_dir, tasks=(TEST_NAMES[0],))
    assert main(["meta-select", str(run_dir), "--tasks", TEST_NAMES[0]]) == 2


def test_a_run_without_snapshots_is_refused(tmp_path):
    with pytest.raises(ValueError, match="holds no θ snapshots"):
        select.select_checkpoint(tmp_path)


def test_inside_hub_runs_every_candidate_as_hubs_learned_member(run_dir, tmp_path, monkeypatch):
    """--inside-hub: each candidate is HUB's learned member beside the task's hand preset
    (what a θ meta-trained with --hub was trained for); the selection file says so, and a
    selection made alone is not reused for it."""
    import shutil

    from hubopt.bench import optimizers

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    alone = select.select_checkpoint(copy, tasks=(TASK,), horizons=(30,), log=lambda *_: None)
    built = []
    real_build = optimizers.build
    monkeypatch.setattr(
        optimizers, "build", lambda spec, n, **kw: built.append(spec) or real_build(spec, n, **kw)
    )
    hub = select.select_checkpoint(
        copy, tasks=(TASK,), horizons=(30,), inside_hub=True, log=lambda *_: None
    )
    assert hub["settings"]["inside_hub"] is True and "inside_hub" not in alone["settings"]
    assert len(built) == 2 and all(spec["name"] == "hub" for spec in built)
    assert {spec["learned"]["path"] for spec in built} == {
        str(copy / "thetas" / name) for name in hub["candidates"]
    }
    assert hub["candidates"] != alone["candidates"]
    flags = ["--tasks", TASK, "--horizons", "30", "--inside-hub"]
    assert main(["meta-select", str(copy), *flags]) == 0


def test_alone_and_inside_hub_scores_each_candidate_by_both_settings(run_dir, tmp_path):
    """--alone-and-inside-hub: each candidate's score is the mean of the scores the alone
    and the inside-HUB selections give it, and it is eligible only when it is in both."""
    import shutil

    quiet = dict(tasks=(TASK,), horizons=(30,), log=lambda *_: None)
    results = {}
    for setting, kw in {
        "alone": {},
        "hub": {"inside_hub": True},
        "both": {"both": True},
    }.items():
        copy = tmp_path / setting
        shutil.copytree(run_dir, copy)
        results[setting] = select.select_checkpoint(copy, **quiet, **kw)
    alone, hub, both = (results[k]["candidates"] for k in ("alone", "hub", "both"))
    assert results["both"]["settings"]["alone_and_inside_hub"] is True
    assert set(both) == set(alone) == set(hub)
    for name, cand in both.items():
        assert cand["score_alone"] == pytest.approx(alone[name]["score"])
        assert cand["score_inside_hub"] == pytest.approx(hub[name]["score"])
        assert cand["score"] == pytest.approx((alone[name]["score"] + hub[name]["score"]) / 2)
        assert cand["eligible"] == (alone[name]["eligible"] and hub[name]["eligible"])
        assert [r.get("inside_hub", False) for r in cand["runs"]] == [False, True]
    with pytest.raises(ValueError, match="exclude each other"):
        select.select_checkpoint(tmp_path / "both", inside_hub=True, both=True, **quiet)
    flags = ["--tasks", TASK, "--horizons", "30", "--alone-and-inside-hub"]
    assert main(["meta-select", str(tmp_path / "both"), *flags]) == 0


def test_several_seeds_hold_the_median_spike_to_the_limit(run_dir, tmp_path):
    """--seeds N: every task and horizon runs with seeds 0 … N−1 (seed 0's run is the
    one-seed selection's), the score is the mean over all runs, and the spike compared
    with the limit is each task and horizon's median over its seeds."""
    import shutil
    import statistics

    quiet = dict(tasks=(TASK,), horizons=(30, 60), log=lambda *_: None)
    shutil.copytree(run_dir, tmp_path / "one")
    shutil.copytree(run_dir, tmp_path / "three")
    one = select.select_checkpoint(tmp_path / "one", **quiet)
    three = select.select_checkpoint(tmp_path / "three", seeds=3, **quiet)
    assert three["settings"]["seeds"] == 3 and "seeds" not in one["settings"]
    for name, cand in three["candidates"].items():
        runs = cand["runs"]
        assert [(r["num_steps"], r["seed"]) for r in runs] == [
            (n, s) for n in (30, 60) for s in range(3)
        ]
        seed0 = [{k: v for k, v in r.items() if k != "seed"} for r in runs if r["seed"] == 0]
        assert seed0 == one["candidates"][name]["runs"]
        medians = [statistics.median(r["spike_ratio"] for r in runs[i : i + 3]) for i in (0, 3)]
        assert cand["worst_spike"] == max(medians)
        assert cand["score"] == pytest.approx(select._score(runs, "train"))
    with pytest.raises(ValueError, match="seeds must be at least 1"):
        select.select_checkpoint(tmp_path / "one", seeds=0, **quiet)


def test_one_seeds_spike_at_the_limit_no_longer_decides_alone(run_dir, tmp_path, monkeypatch):
    """The aggregation by hand: seed 0 spikes (5 > 3), seeds 1 and 2 do not; one seed makes
    every candidate ineligible, three seeds (median 2) make them eligible."""
    import shutil

    def fake_run(task, theta_path, num_steps, seed, inside_hub=False):
        return {
            "task": task,
            "num_steps": num_steps,
            "initial_loss": 1.0,
            "final_loss": 0.1,
            "initial_valid_loss": 1.0,
            "final_valid_loss": 0.2,
            "spike_ratio": {0: 5.0, 1: 1.0, 2: 2.0}[seed],
            "diverged": False,
        }

    monkeypatch.setattr(select, "_run", fake_run)
    quiet = dict(tasks=(TASK,), horizons=(30,), log=lambda *_: None)
    for seeds, worst, eligible in ((1, 5.0, False), (3, 2.0, True)):
        folder = tmp_path / str(seeds)
        shutil.copytree(run_dir, folder)
        (folder / "selection.json").unlink(missing_ok=True)  # another test's real scores
        done = select.select_checkpoint(folder, seeds=seeds, **quiet)
        assert {c["worst_spike"] for c in done["candidates"].values()} == {worst}
        assert {c["eligible"] for c in done["candidates"].values()} == {eligible}
        assert done["chosen_was_eligible"] is eligible
