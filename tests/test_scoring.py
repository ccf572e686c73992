"""Scoring against a tuned baseline: floored ratios, so a zero loss is never a perfect score."""

import math

import pytest

from hubopt.bench import report, scoring
from hubopt.bench.scoring import Comparison, floored_ratio, score


def test_floored_ratio_is_the_ratio_above_the_floor_and_the_floor_below_it():
    assert floored_ratio(2e-3, 1e-3, 1e-6) == pytest.approx(2.0)
    assert floored_ratio(0.0, 1e-3, 1e-6) == pytest.approx(1e-3)  # 1e-6 / 1e-3
    assert floored_ratio(-5.0, 1e-3, 1e-6) == pytest.approx(1e-3)  # a negative loss too
    assert floored_ratio(0.0, 0.0, 1e-6) == 1.0  # both at the floor: a tie
    assert math.isnan(floored_ratio(math.nan, 1.0, 1e-6))
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="floor must be a positive finite"):
            floored_ratio(1.0, 1.0, bad)


def test_a_zero_loss_does_not_make_the_geometric_mean_zero():
    # task a: L0 = 2, floor 2e-6; 0 against 0.5 -> 4e-6. task b: 3 against 1.5 -> 2.
    comparisons = [Comparison("a", 0.0, 0.5, False, 2.0), Comparison("b", 3.0, 1.5, False, 1.0)]
    sc = score(comparisons)
    assert sc.geometric_mean == pytest.approx(math.sqrt(4e-6 * 2.0))
    assert sc.geometric_mean > 0 and (sc.wins, sc.ties, sc.losses) == (1, 0, 1)
    # both memorised (below the floor): a tie, ratio 1, whatever the raw values
    tie = score([Comparison("a", 1e-12, 1e-9, False, 1.0)])
    assert (tie.wins, tie.ties, tie.losses, tie.geometric_mean) == (0, 1, 0, 1.0)


def test_divergence_is_a_loss_outside_the_mean_and_accuracies_count_wins_only():
    sc = score(
        [
            Comparison("a", math.nan, 0.5, False, 1.0),  # diverged
            Comparison("b", 0.25, 0.5, False, 1.0),  # ratio 0.5
            Comparison("c", 0.9, 0.8, True, 2.3),  # higher accuracy: a win, no ratio
            Comparison("d", 0.7, 0.8, True, 2.3),
        ]
    )
    assert (sc.tasks, sc.wins, sc.ties, sc.losses, sc.diverged) == (4, 2, 0, 2, 1)
    assert sc.geometric_mean == pytest.approx(0.5) and sc.ratio_tasks == 1
    assert math.isnan(score([Comparison("c", 0.9, 0.8, True, 2.3)]).geometric_mean)
    with pytest.raises(ValueError, match="baseline must be finite"):
        score([Comparison("a", 1.0, math.nan, False, 1.0)])
    with pytest.raises(ValueError, match="initial loss must be nonzero"):
        score([Comparison("a", 1.0, 1.0, False, 0.0)])


def _rec(task, label, spec, seed, value, initial=1.0):
    return {
        "task": {"name": task, "metric": "loss", "higher_is_better": False},
        "optimizer": {"label": label, "spec": spec},
        "hyperparameters": spec,
        "num_steps": 3,
        "seed": seed,
        "metrics": {"valid": {"loss": value}, "test": {"loss": value}},
        "curve": {"step": [0], "loss": [initial]},
        "final_loss": value,
        "best_loss": value,
        "first_nonfinite_step": None,
        "timing": {"step_time_s": 1e-3},
    }


def test_the_report_scores_each_optimizer_against_the_tuned_baseline():
    recs = []
    for seed in (0, 1):
        for lr, value in ((0.1, 0.2), (0.01, 0.1)):  # tuned on valid: lr 0.01, loss 0.1
            spec = {"name": "adam", "learning_rate": lr}
            recs.append(_rec("t", f"adam@{lr:g}", spec, seed, value, initial=4.0))
        recs.append(_rec("t", "learned", {"name": "small"}, seed, 0.0, initial=4.0))
    table = report.score_table(recs)
    # 0 is floored at 1e-6 × 4: ratio 4e-6 / 0.1 = 4e-5
    assert "| learned | 1 | 1 / 0 / 0 | 0 | 4e-05× (1 tasks) |" in table
    assert "adam@" not in table  # hand rows are the baseline, not scored
    one_rate = [r for r in recs if r["optimizer"]["label"] != "adam@0.1"]
    assert report.score_table(one_rate) == ""  # no tuned baseline, no scores
    hand_only = [r for r in recs if r["optimizer"]["label"] != "learned"]
    assert report.score_table(hand_only) == ""  # nothing to score
    assert f"{scoring.FLOOR:g}" in report.SCORE_NOTE


@pytest.mark.parametrize(
    "value, hand, learned, higher, verdict",
    [
        (0.5, 1.0, 2.0, False, "beats both"),  # a loss below both
        (1.01, 1.0, 2.0, False, "matches the better"),  # within 2% of the better
        (0.99, 1.0, 2.0, False, "matches the better"),  # better, but by less than 2%
        (1.5, 1.0, 2.0, False, "between"),
        (2.5, 1.0, 2.0, False, "below both"),
        (2.0, 1.0, 2.0, False, "between"),  # equal to the worse parent
        (float("nan"), 1.0, 2.0, False, "diverged"),
        (1.0, float("nan"), 2.0, False, "beats both"),  # a diverged parent is the worst
        (0.95, 0.90, 0.50, True, "beats both"),  # accuracies: higher is better
        (0.89, 0.90, 0.50, True, "matches the better"),
        (0.40, 0.90, 0.50, True, "below both"),
    ],
)
def test_a_mixture_against_its_parents_by_hand(value, hand, learned, higher, verdict):
    assert scoring.versus_parents(value, hand, learned, higher) == verdict


@pytest.mark.parametrize(
    "value, hand, learned, higher, margin",
    [
        (0.5, 1.0, 2.0, False, 0.5),  # a loss half the better parent's: 50% beyond it
        (1.5, 1.0, 2.0, False, -0.5),
        (0.99, 0.90, 0.50, True, 0.1),  # accuracies: (0.99 − 0.90) / 0.90
        (float("nan"), 1.0, 2.0, False, -math.inf),  # diverged where a parent is finite
        (1.0, float("nan"), 2.0, False, 0.5),  # a diverged parent is the worst
    ],
)
def test_the_margin_over_the_better_parent_by_hand(value, hand, learned, higher, margin):
    assert scoring.parent_margin(value, hand, learned, higher) == pytest.approx(margin)


def test_the_margin_has_no_scale_without_a_finite_nonzero_better_parent():
    assert math.isnan(scoring.parent_margin(1.0, math.nan, math.inf, False))
    assert math.isnan(scoring.parent_margin(1.0, 0.0, 2.0, False))
    # under the floor the parent is the floor: 1e-9 and 0 count as 1e-6
    assert scoring.parent_margin(0.0, 1e-9, 1.0, False, floor=1e-6) == 0.0


def test_losses_under_the_floor_match_instead_of_beating():
    # 0 and 1e-9 are both under a floor of 1e-6: equal, so the mixture matches the better
    assert scoring.versus_parents(0.0, 1e-9, 1.0, False, floor=1e-6) == "matches the better"
    assert scoring.versus_parents(0.0, 1e-9, 1.0, False) == "beats both"


def test_the_report_finds_each_mixtures_parents_on_the_seeds_all_three_share():
    hand, learned = {"name": "adam", "learning_rate": 0.01}, {"name": "small"}
    recs = []
    for seed in (0, 1, 2):
        recs.append(_rec("t", "adam@0.01", hand, seed, 1.0))
        recs.append(_rec("t", "small", learned, seed, 2.0))
        hub = {"name": "hub", "hand": hand, "learned": learned, "sigma": "rank"}
        recs.append(_rec("t", "hub[sigma=rank](adam@0.01 | small)", hub, seed, 0.5))
    # a mixture whose learned parent was never run alone is left out
    other = {"name": "hub", "hand": hand, "learned": {"name": "velo"}}
    recs.append(_rec("t", "hub(adam@0.01 | velo)", other, 0, 0.1))
    # on task u the learned parent ran seed 0 only: the verdict is on seed 0 alone (mean
    # over the mixture's two seeds, 1.05, would match the better parent instead)
    blend = {"name": "blend", "hand": hand, "learned": learned, "lam": 0.5}
    for seed, value in ((0, 2.0), (1, 0.1)):
        recs.append(_rec("u", "adam@0.01", hand, seed, 1.0))
        recs.append(_rec("u", "blend[λ=0.5](adam@0.01 | small)", blend, seed, value))
    recs.append(_rec("u", "small", learned, 0, 3.0))
    (trio_t, trio_u) = report.parent_trios(recs)
    assert trio_u.seeds == (0,) and trio_u.means == (2.0, 1.0, 3.0)
    assert trio_t.seeds == (0, 1, 2) and trio_t.margin == pytest.approx(0.5)
    verdicts = report.parents_verdicts(recs)
    assert verdicts == [
        ("t", "hub[sigma=rank](adam@0.01 | small)", "beats both"),
        ("u", "blend[λ=0.5](adam@0.01 | small)", "between"),
    ]
    table = report.parents_table(recs)
    assert "| hub[sigma=rank] | 1 | 1 | 0 | 0 | 0 | 0 | met |" in table
    missed = "matches or beats 0/1 < 70%; beats 0/1 < 30%"
    assert f"| blend[λ=0.5] | 1 | 0 | 0 | 1 | 0 | 0 | {missed} |" in table


@pytest.mark.parametrize(
    "counts, missed",
    [
        # 10 tasks: 3 beat, 4 match (7 = 70%), 3 between: every goal met, at its bound
        ({"beats both": 3, "matches the better": 4, "between": 3}, []),
        (
            {"beats both": 2, "matches the better": 5, "between": 3},
            ["beats 2/10 < 30%"],
        ),
        (
            {"beats both": 3, "matches the better": 3, "between": 4},
            ["matches or beats 6/10 < 70%"],
        ),
        # one task below both parents, or one NaN, misses the first goal whatever else
        (
            {"beats both": 8, "matches the better": 1, "below both": 1},
            ["below both 1, diverged 0"],
        ),
        (
            {"beats both": 8, "matches the better": 1, "diverged": 1},
            ["below both 0, diverged 1"],
        ),
        (
            {"between": 2},
            ["matches or beats 0/2 < 70%", "beats 0/2 < 30%"],
        ),
    ],
)
def test_the_goals_of_a_mixture_over_a_suite_by_hand(counts, missed):
    assert scoring.parent_goals(counts) == missed


def test_the_goals_need_tasks_and_known_classes():
    with pytest.raises(ValueError, match="no tasks"):
        scoring.parent_goals(dict.fromkeys(scoring.PARENT_CLASSES, 0))
    with pytest.raises(ValueError, match=r"unknown classes \['better'\]"):
        scoring.parent_goals({"better": 1})


def test_spike_ratio_by_hand():
    steps = [0, 10, 20, 30, 40, 50]
    # L0 = 2: ε = 2e-3. After step 10 (10% of 100) the worst rise is 0.5 at step 40 over
    # the best so far, 0.01 at step 30: (0.5 + 0.002) / (0.01 + 0.002)
    losses = [2.0, 0.1, 0.05, 0.01, 0.5, 0.02]
    assert scoring.spike_ratio(steps, losses, 2.0, 100) == pytest.approx(0.502 / 0.012)
    # a loss that only falls: 1; the best so far counts steps before the skip
    assert scoring.spike_ratio(steps, [2.0, 1.0, 0.5, 0.2, 0.1, 0.0], 2.0, 100) == 1.0
    assert scoring.spike_ratio([0, 5, 20], [2.0, 0.0, 1.0], 2.0, 100) == pytest.approx(
        1.002 / 0.002
    )
    # a rise from 1e-9 to 1e-7 is nothing next to L0: ε keeps it near 1
    assert scoring.spike_ratio([20, 30], [1e-9, 1e-7], 2.0, 100) == pytest.approx(1.0, abs=1e-4)
    # a non-finite loss after the skip is an infinite spike; before it, not judged
    assert scoring.spike_ratio(steps, [2.0, 1.0, float("nan"), 0.5, 0.4, 0.3], 2.0, 100) == math.inf
    assert scoring.spike_ratio([0, 5, 50], [2.0, float("inf"), 0.3], 2.0, 100) == 1.0
    assert math.isnan(scoring.spike_ratio([0, 5], [2.0, 1.0], 2.0, 100))
    with pytest.raises(ValueError, match="initial loss must be finite and nonzero"):
        scoring.spike_ratio(steps, losses, 0.0, 100)
    with pytest.raises(ValueError, match="6 steps but 2 losses"):
        scoring.spike_ratio(steps, [1.0, 2.0], 2.0, 100)


def test_the_parents_tables_on_valid_use_the_valid_metrics():
    """A σ rule or recipe is chosen on valid: the second table reads metrics["valid"]."""
    hand, learned = {"name": "adam", "learning_rate": 0.01}, {"name": "small"}
    hub = {"name": "hub", "hand": hand, "learned": learned, "sigma": "hyper"}
    label = "hub[sigma=hyper](adam@0.01 | small)"
    recs = []
    for seed in (0, 1):
        recs.append(_rec("t", "adam@0.01", hand, seed, 1.0))
        recs.append(_rec("t", "small", learned, seed, 2.0))
        mix = _rec("t", label, hub, seed, 0.5)  # beats both on test …
        mix["metrics"]["valid"]["loss"] = 3.0  # … and falls below both on valid
        recs.append(mix)
    assert report.parents_verdicts(recs) == [("t", label, "beats both")]
    assert report.parents_verdicts(recs, "valid") == [("t", label, "below both")]
    section = report.parents_section(recs, "md")
    on_test, on_valid = section.split(report.PARENTS_VALID_NOTE)
    assert report.PARENTS_NOTE in on_test
    assert "| hub[sigma=hyper] | 1 | 1 | 0 | 0 | 0 | 0 | met |" in on_test
    missed = "below both 1, diverged 0; matches or beats 0/1 < 70%; beats 0/1 < 30%"
    assert f"| hub[sigma=hyper] | 1 | 0 | 0 | 0 | 1 | 0 | {missed} |" in on_valid
    html_section = report.parents_section(recs, "html")
    assert html_section.count("<table") == 2 and "on the valid split</h2>" in html_section
