"""The bundled learned optimizer's goals on its untouched test set (issue 12), met or missed.

Reads the `hubopt sweep lopt_test` record folders of each horizon and prints, per
horizon, every goal with the numbers behind it:

    loss        final training loss ≤ 1.0× tuned Adam with warm-up + cosine (geometric
                mean of floored ratios, `hubopt.bench.scoring`)
    vs Adam     lower final training loss than constant Adam(1e-3) on ≥ 90% of tasks
    accuracy    test accuracy within 0.5 points of tuned Adam + cosine on every task
    test loss   test loss ≤ 1.5× tuned Adam + cosine's on every task
    stability   no divergence; spike ratio ≤ 3 on every run (`scoring.spike_ratio`)
    HUB         default and clipped HUB(Adam, learned) never below the worse parent

"Tuned" is the harness's tuned row: the rate of the grid with the best mean *valid*
loss (test numbers are never used to choose).

    python benchmarks/lopt_goals.py benchmarks/records/lopt_test_{1000,2000,5000}
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

from hubopt.bench import records, report, scoring

LEARNED = "small"
CONSTANT_ADAM = "adam@0.001"
TUNED_ADAM = "tuned adam+warmup_cosine"


def _test_metric(recs, task, label, metric):
    values = [
        r["metrics"]["test"][metric]
        for r in recs
        if r["task"]["name"] == task and r["optimizer"]["label"] == label
    ]
    return statistics.fmean(values) if values else math.nan


def goals(recs: list[dict], learned_label: str = LEARNED) -> list[tuple[str, bool | None, str]]:
    """(goal, met — None when the records cannot say, evidence) for one horizon, of the
    learned optimizer whose rows are labelled `learned_label`."""
    rows = report.results(recs)
    tuned, tuned_label = {}, {}  # the tuned Adam + cosine row, and the run label it chose
    for r, sel in report.tuned_results(recs):
        if r.label.startswith(TUNED_ADAM):
            tuned[r.task] = r
            tuned_label[r.task] = f"adam@{sel['learning_rate']:g}+warmup_cosine"
    learned = {r.task: r for r in rows if r.label == learned_label}
    constant = {r.task: r for r in rows if r.label == CONSTANT_ADAM}
    initial = report.initial_losses(recs)
    tasks = sorted(learned)
    out: list[tuple[str, bool | None, str]] = []
    if not tasks:
        return [("every goal", None, f"no {learned_label} records")]

    comparisons = [
        scoring.Comparison(t, learned[t].mean, tuned[t].mean, False, initial[t])
        for t in tasks
        if t in tuned
    ]
    sc = scoring.score(comparisons)
    out.append(
        (
            "loss ≤ 1.0× tuned Adam+cosine (geo. mean)",
            sc.ratio_tasks == len(tasks) and sc.diverged == 0 and sc.geometric_mean <= 1.0,
            f"{sc.geometric_mean:.3g}× over {sc.ratio_tasks} tasks; better on {sc.wins}, "
            f"worse on {sc.losses}",
        )
    )
    wins = sum(
        1
        for t in tasks
        if t in constant and learned[t].finite and learned[t].mean < constant[t].mean
    )
    out.append(
        ("beats Adam(1e-3) on ≥ 90% of tasks", wins >= 0.9 * len(tasks), f"{wins} of {len(tasks)}")
    )
    acc_gaps, loss_ratios = [], []
    for t in tasks:
        if t not in tuned_label:
            continue
        acc_gaps.append(
            (
                t,
                100 * (_test_metric(recs, t, learned_label, "accuracy"))
                - 100 * _test_metric(recs, t, tuned_label[t], "accuracy"),
            )
        )
        loss_ratios.append(
            (
                t,
                _test_metric(recs, t, learned_label, "loss")
                / _test_metric(recs, t, tuned_label[t], "loss"),
            )
        )
    worst_acc = min(acc_gaps, key=lambda x: x[1])
    out.append(
        (
            "test accuracy within 0.5 points of tuned",
            all(g >= -0.5 for _t, g in acc_gaps),
            "points vs tuned: "
            + ", ".join(f"{t.split('_')[0]}/{t.split('_')[1]} {g:+.2f}" for t, g in acc_gaps)
            + f" (worst {worst_acc[0]})",
        )
    )
    out.append(
        (
            "test loss ≤ 1.5× tuned",
            all(r <= 1.5 for _t, r in loss_ratios),
            "ratios: " + ", ".join(f"{r:.2f}" for _t, r in loss_ratios),
        )
    )
    spikes = [learned[t].spike for t in tasks]
    stable = all(learned[t].diverged == 0 for t in tasks) and all(
        s is not None and s <= 3.0 for s in spikes
    )
    out.append(
        (
            "no divergence, spike ratio ≤ 3",
            stable,
            "worst spike per task: " + ", ".join("-" if s is None else f"{s:.3g}" for s in spikes),
        )
    )
    verdicts = [v for v in report.parents_verdicts(recs) if f"| {learned_label})" in v[1]]
    below = [f"{task}: {label}" for task, label, v in verdicts if v in ("below both", "diverged")]
    out.append(
        (
            "HUB never below the worse parent",
            not below if verdicts else None,
            f"{len(verdicts)} mixtures; below both: {', '.join(below) or 'none'}",
        )
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--learned", default=LEARNED, help="the learned optimizer's row label")
    args = parser.parse_args(argv)
    print("| horizon | goal | met | evidence |")
    print("|---|---|---|---|")
    for folder in args.folders:
        recs = records.read_all([folder])
        steps = sorted({r["num_steps"] for r in recs})
        for goal, met, evidence in goals(recs, args.learned):
            mark = "?" if met is None else ("met" if met else "**missed**")
            print(f"| {'/'.join(map(str, steps))} | {goal} | {mark} | {evidence} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
