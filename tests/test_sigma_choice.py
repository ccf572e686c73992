"""The choice of σ rule (`hubopt.bench.sigma_choice`): the rule by hand on small record
sets built here, and `hubopt.RECOMMENDED_SIGMA` held to the choice on the committed records."""

import math
from pathlib import Path

import pytest

import hubopt
from hubopt.bench import records, scoring, sigma_choice

ROOT = Path(__file__).resolve().parents[1]
HAND, LEARNED = {"name": "adam", "learning_rate": 0.01}, {"name": "small"}
TASKS, SCALE_TASKS = ("a", "b", "c"), ("s",)
RULES, MODES = ("r1", "r2", "r3"), ("default", "inverted")


def _runs(task, label, spec, values):
    """One record per seed, with a lower-is-better valid loss `values[seed]` (test: 100×,
    never read by the choice)."""
    return [
        {
            "task": {"name": task, "metric": "loss", "higher_is_better": False},
            "optimizer": {"label": label, "spec": spec},
            "num_steps": 3,
            "seed": seed,
            "metrics": {"valid": {"loss": v}, "test": {"loss": 100 * v}},
            "curve": {"step": [0], "loss": [10.0]},
            "final_loss": v,
            "best_loss": v,
            "first_nonfinite_step": None,
            "timing": {"step_time_s": 1e-3},
        }
        for seed, v in enumerate(values)
    ]


def _hub(rule, mode="default", **extra):
    return {"name": "hub", "hand": HAND, "learned": LEARNED, "mode": mode, "sigma": rule, **extra}


def _seeds(value, n=3):
    return value if isinstance(value, list) else [value] * n


def _study(mixtures, tasks=TASKS, hand=1.0, learned=2.0):
    """Records of `tasks`: the parents (loss `hand`, `learned` at each of 3 seeds) and each
    mixture {(rule, mode): {task: loss, or a list of one per seed}}."""
    recs = []
    for task in tasks:
        recs += _runs(task, "adam", HAND, _seeds(hand))
        recs += _runs(task, "small", LEARNED, _seeds(learned))
    for (rule, mode), by_task in mixtures.items():
        for task, value in by_task.items():
            recs += _runs(task, f"hub[{mode}; {rule}]", _hub(rule, mode), _seeds(value))
    return recs


def _scale(mixtures):
    """Loss-scale records of task "s": {(rule, mode): {scale: losses per seed}}."""
    recs = []
    for (rule, mode), by_scale in mixtures.items():
        for c, values in by_scale.items():
            name = "s" if c == 1 else f"s_x{c:g}"
            recs += _runs(name, f"hub[{mode}; {rule}]", _hub(rule, mode), values)
    return recs


STEADY = {1: [1.0, 1.0, 1.0], 1e-3: [1.0, 1.0, 1.0], 1e3: [1.0, 1.0, 1.0]}


def _choose(study, scale_by_candidate=None):
    if scale_by_candidate is None:  # every candidate of the study steady across scales
        cands = {key for r in study if (key := sigma_choice.candidate_of(r["optimizer"]["spec"]))}
        scale_by_candidate = dict.fromkeys(cands, STEADY)
    return sigma_choice.choose(
        study, _scale(scale_by_candidate), TASKS, SCALE_TASKS, rules=RULES, modes=MODES
    )


# parents: hand 1.0, learned 2.0. 0.5 beats both; 1.0 matches the better; 1.5 between
R1 = ("r1", "default")  # beats 2, matches 1: every goal met
R2 = ("r2", "default")  # beats 1 (1/3 ≥ 30%), matches 2
GOOD = {R1: {"a": 0.5, "b": 0.5, "c": 1.0}, R2: {"a": 0.5, "b": 1.0, "c": 1.0}}


def _names(standings):
    return [(s.rule, s.mode) for s in standings]


def test_the_candidates_meeting_every_condition_are_ranked_by_beats_then_matches():
    choice = _choose(_study(GOOD))
    assert _names([choice.recommended]) == [R1]
    assert choice.closest is None and choice.ranked == 2 and choice.ranked_on == TASKS
    assert _names(choice.standings)[:2] == [R1, R2]
    assert choice.recommended.counts()["beats both"] == 2
    # margins: (1 − 0.5) / 1 on a and b, 0 on c
    assert choice.recommended.margin() == pytest.approx(1 / 3)
    # the rules never run are listed after, unranked, failing for want of tasks
    last = choice.standings[-1]
    assert not last.trios and last.misses[0] == "3 of 3 tasks not run in full"
    table = sigma_choice.choice_table(choice)
    assert "| **1** | **r1** | **default** | **3 of 3** | **2** | **1** | **0** |" in table
    assert "| 2 | r2 | default | 3 of 3 | 1 | 2 | 0 | 0 | 0 | +16.7% | met | none |" in table
    assert "Recommended: `r1` (default mode)" in sigma_choice.choice_summary(choice)


@pytest.mark.parametrize(
    "change, miss",
    [
        ({"c": None}, "1 of 3 tasks not run in full"),  # a task missing
        ({"c": [1.0, 1.0]}, "1 of 3 tasks not run in full"),  # on two seeds only
        ({"b": [0.5, math.nan, 0.5]}, "below both 0, diverged 1"),  # one seed NaN
        ({"c": 2.5}, "below both 1, diverged 0"),  # below the worse parent
        ({"c": 1.5}, "matches or beats 2/3 < 70%"),
        ({"a": 1.0, "b": 1.0}, "beats 0/3 < 30%"),
    ],
)
def test_each_condition_on_the_study_tasks_can_fail(change, miss):
    mixtures = {R1: {**GOOD[R1], **change}, R2: GOOD[R2]}
    mixtures[R1] = {t: v for t, v in mixtures[R1].items() if v is not None}
    choice = _choose(_study(mixtures))
    r1 = next(s for s in choice.standings if (s.rule, s.mode) == R1)
    assert miss in r1.misses
    assert (choice.recommended.rule, choice.recommended.mode) == R2


def test_a_partial_task_is_named_with_its_seeds():
    choice = _choose(_study({R1: {**GOOD[R1], "c": [1.0, 1.0]}}))
    (r1,) = [s for s in choice.standings if (s.rule, s.mode) == R1]
    assert r1.missing == ("c (seeds 0,1)",) and set(r1.trios) == {"a", "b"}


@pytest.mark.parametrize(
    "at_1000, met",
    [
        ([1.01, 1.01, 1.01], True),  # 1% off: within 2%
        ([1.1, 1.1, 1.1], False),  # 10% off, no spread: out
        ([0.7, 1.0, 1.6], True),  # mean 1.1, 10% off, but within two standard errors
        (None, False),  # not run at that scale
        ([1.0, math.nan, 1.0], False),  # diverged there
    ],
)
def test_the_same_result_at_every_loss_scale_within_2_percent_or_two_errors(at_1000, met):
    scale = {1: [1.0, 1.0, 1.0], 1e-3: [1.0, 1.0, 1.0]}
    if at_1000 is not None:
        scale[1e3] = at_1000
    choice = _choose(_study(GOOD), {R1: scale, R2: STEADY})
    r1 = next(s for s in choice.standings if (s.rule, s.mode) == R1)
    assert (not r1.scale) == met
    assert _names(choice.standings)[0] == (R1 if met else R2)
    if not met:
        assert r1.misses[-1].startswith("loss scale: s_x1000")


def test_two_standard_errors_by_hand():
    # sample variances 0.21 (0.7, 1.0, 1.6) and 0.01 (2.0, 2.1, 2.2): 2 √(0.21/3 + 0.01/3)
    a, b = [0.7, 1.0, 1.6], [2.0, 2.1, 2.2]
    assert scoring.two_standard_errors(a, b) == pytest.approx(2 * math.sqrt(0.22 / 3))
    # one seed borrows the other side's spread: 2 √(0.21/1 + 0.21/3)
    assert scoring.two_standard_errors([0.5], a) == pytest.approx(2 * math.sqrt(0.21 + 0.07))
    assert math.isnan(scoring.two_standard_errors([0.5], [0.7]))
    with pytest.raises(ValueError, match="at least one seed"):
        scoring.two_standard_errors([], a)


TEN = tuple(f"t{i}" for i in range(10))  # goals: ≥ 3 beating both, ≥ 7 matching or beating


def _on_ten(*values):
    """A mixture on `TEN`: the given losses on the first tasks, 1.0 (a match) after."""
    return dict(zip(TEN, [*values, *[1.0] * (10 - len(values))], strict=True))


def test_ties_go_to_matches_then_margin_then_the_order_of_the_rules():
    r3 = ("r3", "default")

    def order(mixtures):
        study = _study(mixtures, TEN)
        scale = dict.fromkeys(mixtures, STEADY)
        choice = sigma_choice.choose(study, _scale(scale), TEN, SCALE_TASKS, RULES, MODES)
        assert choice.ranked == 2  # both qualify
        return _names(choice.standings)[:2]

    # beats first: r3 beats 3 with a huge margin, r2 beats 4
    assert order({R2: _on_ten(0.5, 0.5, 0.5, 0.5), r3: _on_ten(0.01, 0.01, 0.01)}) == [R2, r3]
    # beats tie (3): more matches first (r2: 7, r3: 6 and one between), whatever the margin
    between = _on_ten(0.01, 0.01, 0.01, 1.5)
    assert order({R2: _on_ten(0.5, 0.5, 0.5), r3: between}) == [R2, r3]
    # beats and matches tie: the larger mean margin first
    assert order({R2: _on_ten(0.5, 0.5, 0.5), r3: _on_ten(0.1, 0.5, 0.5)}) == [r3, R2]
    # a tie in every key: the order of the rules (r2 before r3)
    assert order({R2: _on_ten(0.5, 0.5, 0.5), r3: _on_ten(0.5, 0.5, 0.5)}) == [R2, r3]


def test_with_none_qualifying_the_closest_is_ranked_on_the_tasks_every_rule_ran():
    r3 = ("r3", "default")
    mixtures = {
        R1: {"a": 0.5, "b": 0.5},  # beats both on both common tasks; lacks c
        R2: {"a": 0.5, "b": 1.0, "c": 2.5},  # complete, but below both on c
        r3: {"a": 2.5, "b": 0.1, "c": 0.1},  # beats 2 of 3, but below both on a (common)
    }
    choice = _choose(_study(mixtures))
    assert choice.recommended is None and choice.ranked_on == ("a", "b")
    assert (choice.closest.rule, choice.closest.mode) == R1
    # r3 fails goals on the common tasks (below both on a): after r2, which fails none there
    assert _names(choice.standings)[:3] == [R1, R2, r3]
    summary = sigma_choice.choice_summary(choice)
    assert "Recommended: none" in summary and "Closest: `r1` (default mode)" in summary
    assert "on the 2 tasks every candidate has run in full (a, b)" in summary


def test_nothing_is_ranked_when_no_task_was_run_in_full_by_every_candidate():
    choice = _choose(_study({R1: {"a": 0.5}, R2: {"b": 0.5}}))
    assert choice.recommended is None and choice.closest is None and choice.ranked == 0
    assert "none is ranked" in sigma_choice.choice_summary(choice)


def test_candidates_are_plain_hub_runs_and_one_per_task():
    assert sigma_choice.candidate_of(_hub("rank", "inverted")) == ("rank", "inverted")
    paper = {"name": "hub", "hand": HAND, "learned": LEARNED, "mode": "default"}
    assert sigma_choice.candidate_of(paper) == ("softmax", "default")
    assert sigma_choice.candidate_of(_hub("softmax", clip=[0.1, 0.9])) is None
    assert sigma_choice.candidate_of({"name": "blend", "lam": 0.5}) is None
    twice = _study(GOOD)
    other = {**_hub("r1"), "learned": {"name": "velo"}}
    twice += _runs("a", "velo", other["learned"], [2.0] * 3)
    twice += _runs("a", "hub r1 velo", other, [0.5] * 3)
    with pytest.raises(ValueError, match=r"two runs of σ rule r1 \(default\) on a"):
        _choose(twice)


def test_the_choice_is_read_on_valid_never_on_test():
    study = _study(GOOD)
    for r in study:  # on test r2 would beat r1 everywhere
        if r["optimizer"]["label"].startswith("hub[default; r2]"):
            r["metrics"]["test"]["loss"] = 0.0
    assert _names(_choose(study).standings)[0] == R1


def _committed():
    study = records.read_all([ROOT / "benchmarks/records/sigma_cpu"])
    return study, records.read_all([ROOT / "benchmarks/records/sigma_scale_cpu"])


def test_recommended_sigma_is_the_choice_on_the_committed_records():
    """Set `hubopt.RECOMMENDED_SIGMA` (and `hubopt.RECOMMENDED_MODE` for inverted) to what
    the records choose, never by hand: this fails either way."""
    choice = sigma_choice.choose(*_committed())
    chosen = choice.recommended
    expected = None if chosen is None else chosen.rule
    assert hubopt.RECOMMENDED_SIGMA == expected, (
        f"the committed records choose {expected!r} (BENCHMARKS.md's sigma-choice block); "
        f"hubopt.RECOMMENDED_SIGMA is {hubopt.RECOMMENDED_SIGMA!r}"
    )
    if chosen is not None:
        assert getattr(hubopt, "RECOMMENDED_MODE", "default") == chosen.mode
    assert (ROOT / "BENCHMARKS.md").read_text().count("<!-- sigma-choice: ") == 1
