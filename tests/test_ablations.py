"""The ablations section: each blend, HUB mode and LGL2O against its parents, from records."""

from test_claims import _runs  # tests/ is on sys.path under pytest

from hubopt.bench import ablations, records, sweep

TASK = sweep.ABLATION_TASKS[1]  # a lower-is-better task of the preset


def _folder():
    """Parents and three ablation contenders on TASK (test MSE per seed), plus a run the
    ablations do not hold (a σ-study rule) and a task they do not cover."""
    return [
        *_runs(TASK, "preset", [1.0, 1.2, 1.1]),
        *_runs(TASK, "small", [2.0, 2.2, 2.1]),
        *_runs(TASK, "hub:preset+small", [0.5, 0.6, 0.7]),  # beats both
        *_runs(TASK, "blend:preset+small,lam=0.5", [1.5, 1.5, 1.5]),  # between
        *_runs(TASK, "hub:preset+small,mode=inverted", [3.0, 3.0]),  # below both, 2 seeds
        *_runs(TASK, "hub:preset+small,sigma=rank", [0.1, 0.1, 0.1]),  # not an ablation
        *_runs("fmnist_resnet", "preset", [1.0]),
        *_runs("fmnist_resnet", "hub:preset+small", [0.5]),
    ]


def test_only_the_presets_runs_are_read_and_judged_against_their_parents():
    recs = _folder()
    mine = ablations.ablation_records(recs)
    labels = {r["optimizer"]["label"] for r in mine}
    assert {r["task"]["name"] for r in mine} == {TASK}
    assert not any("sigma=rank" in label for label in labels)
    trios = ablations.ablation_trios(recs)
    # in the preset's order (sweep.ablation_contenders()): the λ = 0.5 blend, HUB, inverted HUB
    assert [(t.spec["name"], t.spec.get("mode", "default")) for t in trios] == [
        ("blend", "default"),
        ("hub", "default"),
        ("hub", "inverted"),
    ]
    assert [t.verdict for t in trios] == ["between", "beats both", "below both"]
    inverted = trios[2]
    assert inverted.seeds == (0, 1)  # the seeds all three share
    assert inverted.means == (3.0, 1.1, 2.1)  # hand (1.0 + 1.2) / 2, learned (2.0 + 2.2) / 2


def test_the_markdown_shows_means_over_the_shared_seeds_and_the_goal_counts():
    text = ablations.markdown(_folder())
    row = next(line for line in text.splitlines() if "hub[inverted]" in line and "seeds" in line)
    assert "test mse 3 ± 0 (lower is better; seeds 0,1)" in row
    assert "| 1.1 ± 0.14 | 2.1 ± 0.14 | below both |" in row
    # the counts over tasks (one task here): inverted HUB misses "never below"
    counts = next(line for line in text.splitlines() if line.startswith("| hub[inverted] |"))
    assert "below both 1" in counts
    assert "No ablation runs" in ablations.markdown([])
    assert "<table" in ablations.html_section(_folder())


def test_the_committed_study_holds_every_ablation_run():
    """The σ study's folder is where RESULTS.md reads the ablations from: every point of
    `hubopt sweep ablations` is there (so the section is complete, not partial)."""
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "benchmarks/records/sigma_cpu"
    recs = records.read_all([folder])
    trios = ablations.ablation_trios(recs)
    assert len(trios) == len(sweep.ABLATION_TASKS) * len(sweep.ablation_contenders())
    assert all(len(t.seeds) >= 3 for t in trios)
