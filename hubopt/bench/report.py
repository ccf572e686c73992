"""Tables and figures made only from records on disk (`hubopt report`).

Nothing here sees a running process: `report(paths, out_dir, formats=...)`
reads the records, groups them by (task, optimizer label, number of steps),
and writes

    table.md       the results table (below), the loss table and the tasks' metrics
    table.csv      the loss table (best and final loss: median [min, max] over seeds)
    table.tex      the results table as LaTeX (format "latex")
    tuned.jsonl    each tuned baseline's choice of learning rate, on the valid split
    index.html     one self-contained page: tables, every figure embedded, and how
                   it was made (format "html")
    *.png          the figures of `hubopt.bench.figures` that the records support

The results table is the paper's kind: per task, one row per optimizer with the
task's headline test metric (mean ± std over seeds), how many seeds diverged
and the first step at which one did, the step time and its overhead over the
task's hand-designed optimizer; the best row per task is marked. Where the records
hold a hand-designed optimizer at several learning rates, a "tuned" row gives the
rate chosen on the valid split (`tuned_results`), the fair baseline. Which row is
best is `best_rows`, a small rule with its own tests.

Every output carries how it was made: the commands that produced the records,
the seeds, the versions, the git commit and the report's own command.
"""

from __future__ import annotations

import csv
import io
import math
import re
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

from hubopt._src.atomic_write import write_atomic
from hubopt.bench import records, scoring


def steps_to_target(steps, losses, target: float) -> float:
    """The first step whose loss is <= `target` (AlgoPerf's rule); `inf` if never reached."""
    for s, v in zip(steps, losses, strict=True):
        if v <= target:  # NaN compares False: a diverged point never reaches a target
            return float(s)
    return math.inf


@dataclass(frozen=True)
class Row:
    """One line of the table: an optimizer on a task, summarised over seeds."""

    task: str
    label: str
    learned: str
    num_steps: int
    seeds: tuple[int, ...]
    best: tuple[float, float, float]  # median, min, max over seeds
    final: tuple[float, float, float]
    step_time_us: float  # median over seeds


def _learned_text(slot: dict | None) -> str:
    if slot is None:
        return "-"
    if slot.get("is_learned"):
        return f"{slot['label']} (learned)"
    return f"{slot['label']} (NOT learned)"


def _summary(values) -> tuple[float, float, float]:
    vals = [float(v) for v in values]
    if any(math.isnan(v) for v in vals):
        return (math.nan, math.nan, math.nan)
    return (statistics.median(vals), min(vals), max(vals))


def _groups(recs: list[dict]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in recs:
        groups[(r["task"]["name"], r["optimizer"]["label"], r["num_steps"])].append(r)
    for key, rs in groups.items():
        seeds = [r["seed"] for r in rs]
        if len(set(seeds)) != len(seeds):
            raise records.RecordError(
                f"two records of {key[1]} on {key[0]} ({key[2]} steps) share a seed: {seeds}"
            )
        rs.sort(key=lambda r: r["seed"])
    return dict(sorted(groups.items()))


def summarize(recs: list[dict]) -> list[Row]:
    """One `Row` per (task, optimizer label, steps), in that order."""
    rows = []
    for (task, lab, n), rs in _groups(recs).items():
        rows.append(
            Row(
                task=task,
                label=lab,
                learned=_learned_text(rs[0]["optimizer"].get("learned")),
                num_steps=n,
                seeds=tuple(r["seed"] for r in rs),
                best=_summary(r["best_loss"] for r in rs),
                final=_summary(r["final_loss"] for r in rs),
                step_time_us=statistics.median(r["timing"]["step_time_s"] for r in rs) * 1e6,
            )
        )
    return rows


def _g(x: float) -> str:
    return f"{x:.4g}"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|")


def markdown_table(rows: list[Row]) -> str:
    """The rows as a Markdown table (losses: median over seeds [min, max])."""
    lines = [
        "| task | optimizer | learned slot | steps | seeds | best loss | final loss | µs/step |",
        "|---|---|---|---:|---|---|---|---:|",
    ]
    for r in rows:
        best = f"{_g(r.best[0])} [{_g(r.best[1])}, {_g(r.best[2])}]"
        final = f"{_g(r.final[0])} [{_g(r.final[1])}, {_g(r.final[2])}]"
        seeds = ",".join(map(str, r.seeds))
        lines.append(
            f"| {r.task} | {_cell(r.label)} | {_cell(r.learned)} | {r.num_steps} "
            f"| {seeds} | {best} | {final} | {r.step_time_us:.1f} |"
        )
    return "\n".join(lines) + "\n"


def _mean_std(values: list[float]) -> str:
    """ "mean ± std" over seeds (sample std), "x (1 seed)" for one; "NaN (k of n seeds)"
    when some are not finite."""
    bad = [v for v in values if not math.isfinite(v)]
    if bad:
        return f"NaN ({len(bad)} of {len(values)} seeds)"
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.4g} (1 seed)"
    return f"{mean:.4g} ± {statistics.stdev(values):.2g}"


def metrics_table(recs: list[dict]) -> str:
    """The tasks' own metrics of the final params (records' `metrics`) as Markdown:
    the headline metric on the task's metric split (test, or train) and on valid, and
    every other metric of that split, mean ± std over seeds. Empty when no record has metrics."""
    groups = {k: rs for k, rs in _groups(recs).items() if all(r.get("metrics") for r in rs)}
    if not groups:
        return ""
    lines = [
        "| task | optimizer | seeds | reported metric | valid metric | other metrics |",
        "|---|---|---|---|---|---|",
    ]
    for (task, lab, _n), rs in groups.items():
        metric = rs[0]["task"].get("metric", "loss")
        split = rs[0]["task"].get("metric_split", "test")
        better = "higher" if rs[0]["task"].get("higher_is_better") else "lower"

        def values(split, key, rs=rs):
            return [float(r["metrics"].get(split, {}).get(key, math.nan)) for r in rs]

        # every other metric of the reported split, and of valid when that is train's
        # companion (the held-out data of an optimization-quality task)
        other_splits = [split] + (["valid"] if split == "train" else [])
        others = [
            (sp, k)
            for sp in other_splits
            for k in sorted(set(rs[0]["metrics"].get(sp, {})) - {metric, "loss"})
        ]
        other = "; ".join(f"{sp} {k} {_mean_std(values(sp, k))}" for sp, k in others) or "-"
        lines.append(
            f"| {task} | {_cell(lab)} | {','.join(str(r['seed']) for r in rs)} "
            f"| {split} {metric} {_mean_std(values(split, metric))} ({better} is better) "
            f"| {_mean_std(values('valid', metric))} | {other} |"
        )
    return "\n".join(lines) + "\n"


def csv_table(rows: list[Row]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        [
            "task",
            "optimizer",
            "learned_slot",
            "num_steps",
            "seeds",
            "best_median",
            "best_min",
            "best_max",
            "final_median",
            "final_min",
            "final_max",
            "step_time_us",
        ]
    )
    for r in rows:
        w.writerow(
            [
                r.task,
                r.label,
                r.learned,
                r.num_steps,
                " ".join(map(str, r.seeds)),
                *(repr(v) for v in r.best),
                *(repr(v) for v in r.final),
                f"{r.step_time_us:.3f}",
            ]
        )
    return buf.getvalue()


def provenance(recs: list[dict], report_command: str | None = None) -> str:
    """How the records (and so the figure) were made: commands, seeds, versions, git."""
    commands = sorted({r["meta"].get("command", "?") for r in recs})
    seeds = sorted({r["seed"] for r in recs})
    versions = sorted(
        {", ".join(f"{k} {v}" for k, v in sorted(r["meta"]["versions"].items())) for r in recs}
    )
    commits = sorted(
        {
            f"{(r['meta'].get('git') or {}).get('commit') or '?'}"[:10]
            + ("+dirty" if (r["meta"].get("git") or {}).get("dirty") else "")
            for r in recs
        }
    )
    dates = sorted(r["meta"].get("date", "?") for r in recs)
    devices = sorted(
        {f"{r['meta'].get('device', '?')} ({r['meta'].get('cpu_count', '?')} cpus)" for r in recs}
    )
    lines = [
        f"records made by: {' ; '.join(commands)}",
        f"seeds: {', '.join(map(str, seeds))}   git: {', '.join(commits)}   "
        f"dates: {dates[0]} .. {dates[-1]}   device: {', '.join(devices)}",
        f"versions: {' | '.join(versions)}",
    ]
    if report_command:
        lines.append(f"figure made from {len(recs)} records on disk by: {report_command}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- results table


@dataclass(frozen=True)
class Result:
    """One optimizer on one task, as the paper's tables show it."""

    task: str
    label: str
    metric: str
    higher_is_better: bool
    split: str  # where `values` come from: the task's metric split ("test", or "train"
    # for an optimization-quality task), or "valid loss" for records without metrics
    values: tuple[float, ...]  # one per seed
    seeds: tuple[int, ...]
    diverged: int  # seeds whose training loss became non-finite, or whose metric is
    first_divergence: int | None  # the earliest such step over seeds
    step_time_us: float
    is_hand: bool
    spike: float | None = None  # the largest `scoring.spike_ratio` over seeds, from the
    # whole training split's loss at the evaluations (records of tasks that log it)

    @property
    def finite(self) -> bool:
        return self.diverged == 0 and all(math.isfinite(v) for v in self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values) if self.finite else math.nan


def results(recs: list[dict], split: str | None = None) -> list[Result]:
    """One `Result` per (task, optimizer label, steps), from the records' metrics on their
    task's metric split (test, unless the task reports its final training loss), or on
    `split` ("valid": what a choice among optimizers is made on)."""
    from hubopt.bench.optimizers import HAND

    out = []
    for (task, label, _n), rs in _groups(recs).items():
        head = rs[0]["task"]
        metric = head.get("metric", "loss")
        metric_split = split or head.get("metric_split", "test")
        if all(metric in (r.get("metrics") or {}).get(metric_split, {}) for r in rs):
            values = [float(r["metrics"][metric_split][metric]) for r in rs]
        else:  # records without metrics on that split: their final (valid) loss
            values, metric_split, metric = (
                [float(r["final_loss"]) for r in rs],
                "valid loss",
                "loss",
            )
        steps = [r.get("first_nonfinite_step") for r in rs]
        bad = [s for s in steps if s is not None]
        spikes = [record_spike_ratio(r) for r in rs]
        diverged = sum(
            1 for s, v in zip(steps, values, strict=True) if s is not None or not math.isfinite(v)
        )
        out.append(
            Result(
                task=task,
                label=label,
                metric=metric,
                higher_is_better=bool(head.get("higher_is_better"))
                and metric_split != "valid loss",
                split=metric_split,
                values=tuple(values),
                seeds=tuple(r["seed"] for r in rs),
                diverged=diverged,
                first_divergence=min(bad) if bad else None,
                step_time_us=statistics.median(r["timing"]["step_time_s"] for r in rs) * 1e6,
                is_hand=rs[0]["optimizer"]["spec"].get("name") in HAND,
                spike=None if None in spikes else max(spikes),
            )
        )
    return out


def record_spike_ratio(rec: dict) -> float | None:
    """`scoring.spike_ratio` of a run's whole-training-split losses at its evaluations
    (L₀ the one at step 0), from its record (or `runner.train`'s result); None for a run
    without them."""
    train = (rec.get("eval") or {}).get("train")
    if not train:
        return None
    steps, losses = rec["eval"]["step"], train["loss"]
    return scoring.spike_ratio(steps, losses, losses[0], rec["num_steps"])


def tuned_results(recs: list[dict]) -> list[tuple[Result, dict]]:
    """The tuned hand-designed baselines: one `Result` per task and hand optimizer family.

    A family is the hand-designed runs of one task that differ only in their learning
    rate (same optimizer, schedule and steps) and cover at least two rates, each over
    the same seeds. Its rate is chosen on the **valid** split by
    `hubopt.bench.tuning.select_learning_rate` (test metrics are never looked at); the
    row holds that rate's values on the task's metric split, labelled
    `tuned <optimizer>+<schedule>`. Returns (result, selection) pairs; a family whose
    records lack valid metrics, or whose rates were run over different seeds, is left out.
    """
    from hubopt.bench import tuning
    from hubopt.bench.optimizers import HAND

    by_label = {(r.task, r.label): r for r in results(recs)}
    families: dict[tuple, dict[float, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in recs:
        spec = r["optimizer"]["spec"]
        if spec.get("name") not in HAND or "learning_rate" not in spec:
            continue
        key = (r["task"]["name"], r["num_steps"], records.family_key(spec))
        families[key][float(spec["learning_rate"])].append(r)
    out = []
    for (task, _n, _family), by_rate in sorted(families.items()):
        seed_sets = {tuple(sorted(x["seed"] for x in rs)) for rs in by_rate.values()}
        if len(by_rate) < 2 or len(seed_sets) != 1:
            continue
        head = next(iter(by_rate.values()))[0]
        metric = head["task"].get("metric", "loss")
        if not all(
            metric in (x.get("metrics") or {}).get("valid", {})
            for rs in by_rate.values()
            for x in rs
        ):
            continue
        grid = sorted(by_rate, reverse=True)
        flat = [x for rs in by_rate.values() for x in rs]
        try:
            selection = tuning.select_learning_rate(
                flat,
                grid,
                metric=metric,
                higher_is_better=bool(head["task"].get("higher_is_better")),
                seeds=list(seed_sets.pop()),
            )
        except ValueError:  # every rate diverged: no tuned row, the grid rows say why
            continue
        chosen = by_rate[selection["learning_rate"]][0]["optimizer"]["label"]
        base = by_label[(task, chosen)]
        name = chosen.replace(f"@{selection['learning_rate']:g}", "")
        label = (
            f"tuned {name}: lr {selection['learning_rate']:g} "
            f"(valid, of {'/'.join(f'{lr:g}' for lr in grid)})"
        )
        out.append((replace(base, label=label, is_hand=False), selection))
    return out


def best_rows(rows: list[Result]) -> set[tuple[str, str]]:
    """The (task, label) of the best row of each task: the best mean metric among rows
    whose every seed stayed finite (a diverged row is never best), in the task's
    direction; ties are all marked. A task whose every row diverged has none."""
    best: set[tuple[str, str]] = set()
    for task in sorted({r.task for r in rows}):
        finite = [r for r in rows if r.task == task and r.finite]
        if not finite:
            continue
        sign = -1.0 if finite[0].higher_is_better else 1.0
        top = min(sign * r.mean for r in finite)
        best |= {(r.task, r.label) for r in finite if sign * r.mean == top}
    return best


def _result_cells(r: Result, hand_us: float | None) -> list[str]:
    if r.finite:
        value = _mean_std(list(r.values))
    else:
        value = f"NaN ({r.diverged} of {len(r.values)} seeds"
        value += f"; first at step {r.first_divergence})" if r.first_divergence is not None else ")"
    overhead = "-" if hand_us is None else f"{r.step_time_us / hand_us:.2f}×"
    return [r.task, r.label, value, ",".join(map(str, r.seeds)), f"{r.step_time_us:.0f}", overhead]


RESULT_HEADERS = ["task", "optimizer", "metric (mean ± std)", "seeds", "µs/step", "× hand"]
SPIKE_HEADER = "spike (worst seed)"  # a column only where records log the training loss


def results_table(recs: list[dict], fmt: str = "md") -> str:
    """The results table in `fmt` ("md", "latex" or "html"); the best row of each task in
    bold. "× hand" is the step time over the fastest hand-designed optimizer's on that task."""
    rows = results(recs)
    for tuned, _selection in tuned_results(recs):  # after the task's last row
        last = max(i for i, r in enumerate(rows) if r.task == tuned.task)
        rows.insert(last + 1, tuned)
    best = best_rows(rows)
    with_spikes = any(r.spike is not None for r in rows)
    body, bold = [], []
    for r in rows:
        hands = [h.step_time_us for h in rows if h.task == r.task and h.is_hand]
        cells = _result_cells(r, min(hands) if hands else None)
        direction = "higher" if r.higher_is_better else "lower"
        cells[2] = f"{r.split} {r.metric} {cells[2]} ({direction} is better)"
        if with_spikes:
            cells.append("-" if r.spike is None else f"{r.spike:.3g}")
        body.append(cells)
        bold.append((r.task, r.label) in best)
    headers = RESULT_HEADERS + [SPIKE_HEADER] * with_spikes
    return render_table(headers, body, fmt, bold)


SCORE_HEADERS = [
    "optimizer",
    "tasks",
    "better / tie / worse than tuned",
    "diverged",
    "geometric mean of floored ratios",
]


def initial_losses(recs: list[dict]) -> dict[str, float]:
    """Each task's mean initial training loss over its records (the first point of their
    curves, where finite): the scale that losses are floored against."""
    initial: dict[str, list[float]] = defaultdict(list)
    for rec in recs:
        losses = (rec.get("curve") or {}).get("loss") or []
        if losses and math.isfinite(losses[0]):
            initial[rec["task"]["name"]].append(float(losses[0]))
    return {task: statistics.fmean(values) for task, values in initial.items()}


def score_table(recs: list[dict], fmt: str = "md") -> str:
    """Each optimizer against each task's best tuned hand-designed baseline
    (`tuned_results`, chosen on valid), scored by `hubopt.bench.scoring.score`; "" when
    no task has a tuned baseline or no other optimizer ran. Hand-designed rows themselves
    are left out."""
    tuned: dict[str, Result] = {}
    for r, _selection in tuned_results(recs):
        if not r.finite:
            continue
        sign = -1.0 if r.higher_is_better else 1.0
        if r.task not in tuned or sign * r.mean < sign * tuned[r.task].mean:
            tuned[r.task] = r
    if not tuned:
        return ""
    initial = initial_losses(recs)
    by_label: dict[str, list] = defaultdict(list)
    for r in results(recs):
        if r.is_hand or r.task not in tuned or r.task not in initial:
            continue
        base = tuned[r.task]
        by_label[r.label].append(
            scoring.Comparison(r.task, r.mean, base.mean, r.higher_is_better, initial[r.task])
        )
    body = []
    for label, comparisons in sorted(by_label.items()):
        sc = scoring.score(comparisons)
        geo = "-" if sc.ratio_tasks == 0 else f"{sc.geometric_mean:.3g}× ({sc.ratio_tasks} tasks)"
        body.append(
            [label, str(sc.tasks), f"{sc.wins} / {sc.ties} / {sc.losses}", str(sc.diverged), geo]
        )
    return render_table(SCORE_HEADERS, body, fmt) if body else ""


PARENTS_HEADERS = [
    "mixture",
    "tasks",
    *scoring.PARENT_CLASSES,
    f"goals (never below; ≥ {scoring.GOAL_MATCH:.0%} match; ≥ {scoring.GOAL_BEAT:.0%} beat)",
]


@dataclass(frozen=True)
class ParentTrio:
    """A mixture run (HUB, blend, LGL2O) on one task beside its two parents, its hand
    member and its learned member each run alone on the same task and steps: their
    `Result`s, and the means over the seeds all three share."""

    spec: dict  # the mixture's optimizer spec
    mixture: Result
    hand: Result
    learned: Result
    seeds: tuple[int, ...]  # the seeds all three ran
    means: tuple[float, float, float]  # mixture, hand, learned over `seeds`
    floor: float  # losses are floored here (scoring.FLOOR × |L₀|; 0 without L₀)

    @property
    def task(self) -> str:
        return self.mixture.task

    @property
    def label(self) -> str:
        return self.mixture.label

    @property
    def verdict(self) -> str:
        """`scoring.versus_parents` of the means: "beats both", "between", ..."""
        return scoring.versus_parents(*self.means, self.mixture.higher_is_better, self.floor)

    @property
    def margin(self) -> float:
        """`scoring.parent_margin` of the means: > 0 beyond the better parent."""
        return scoring.parent_margin(*self.means, self.mixture.higher_is_better, self.floor)


def parent_trios(recs: list[dict], split: str | None = None) -> list[ParentTrio]:
    """Every mixture run (HUB, blend, LGL2O) whose two parents — its hand and its learned
    member, each run alone on the same task, steps and seeds — are among `recs`, with
    them, on each task's metric split or on `split` (as in `results`); sorted by task and
    label. A mixture that shares no seed with its parents is left out."""

    def key(task, spec, steps):
        return task, records.spec_key(spec), steps

    by_label = {(r.task, r.label): r for r in results(recs, split)}
    initial = initial_losses(recs)
    label_of, specs = {}, {}
    for rec in recs:
        task, spec = rec["task"]["name"], rec["optimizer"]["spec"]
        label_of[key(task, spec, rec["num_steps"])] = rec["optimizer"]["label"]
        specs[(task, rec["optimizer"]["label"])] = (spec, rec["num_steps"])
    out = []
    for (task, label), (spec, steps) in sorted(specs.items()):
        if spec.get("name") not in ("hub", "blend", "lgl2o"):
            continue
        hand = label_of.get(key(task, spec.get("hand"), steps))
        learned = label_of.get(key(task, spec.get("learned"), steps))
        if hand is None or learned is None:
            continue
        trio = [by_label[(task, x)] for x in (label, hand, learned)]
        runs = [dict(zip(r.seeds, r.values, strict=True)) for r in trio]
        seeds = sorted(set(runs[0]) & set(runs[1]) & set(runs[2]))
        if not seeds:
            continue
        means = tuple(statistics.fmean(run[s] for s in seeds) for run in runs)
        floor = scoring.FLOOR * abs(initial[task]) if task in initial else 0.0
        out.append(ParentTrio(spec, *trio, tuple(seeds), means, floor))
    return out


def parents_verdicts(recs: list[dict], split: str | None = None) -> list[tuple[str, str, str]]:
    """(task, mixture label, verdict) of every `parent_trios` (the means over the seeds
    all three share, losses floored as in the score table; `scoring.versus_parents`)."""
    return [(t.task, t.label, t.verdict) for t in parent_trios(recs, split)]


def _variant(label: str) -> str:
    """A mixture's label without its members: "hub[inverted; sigma=rank]", "lgl2o"."""
    return label.split("(", 1)[0]


def parents_table(recs: list[dict], fmt: str = "md", split: str | None = None) -> str:
    """Per mixture variant, over tasks: how often it beats both parents, matches the
    better one (within 2%), lands between them, falls below both or diverges, and the
    goals it misses over those tasks (`scoring.parent_goals`); "" when no mixture's
    parents were run. On each task's metric split, or on `split`."""
    counts: dict[str, dict[str, int]] = defaultdict(
        lambda: dict.fromkeys(scoring.PARENT_CLASSES, 0)
    )
    for _task, label, verdict in parents_verdicts(recs, split):
        counts[_variant(label)][verdict] += 1
    body = [
        [
            variant,
            str(sum(c.values())),
            *(str(c[k]) for k in scoring.PARENT_CLASSES),
            "; ".join(scoring.parent_goals(c)) or "met",
        ]
        for variant, c in sorted(counts.items())
    ]
    return render_table(PARENTS_HEADERS, body, fmt) if body else ""


PARENTS_NOTE = (
    "Against the parents (each mixture's hand member and learned member, each run alone "
    "on the same task and seeds; means over the seeds all three share): beats both = "
    "better than the better parent by more than 2%; matches the better = within 2% of it; "
    "between; below both = worse than the worse parent. Goals: what HUB promises over a "
    "suite (issue 13): never below the worse parent nor NaN where a parent is finite, "
    f"matching the better parent or beating both on at least {scoring.GOAL_MATCH:.0%} of the "
    f"tasks, and beating both on at least {scoring.GOAL_BEAT:.0%}; a cell lists what is missed."
)
PARENTS_VALID_NOTE = (
    "The same on the valid split (each task's headline metric there): a choice among "
    "mixtures — a σ rule, a mode, a recipe — is made on this table, never on the one above."
)


def parents_section(recs: list[dict], fmt: str) -> str:
    """The "against the parents" tables, on the tasks' metric splits and on valid, each
    under its note (Markdown, or HTML with headings); "" when no mixture's parents ran."""
    import html

    out = []
    for title, note, split in (
        ("Against the parents", PARENTS_NOTE, None),
        ("Against the parents on the valid split", PARENTS_VALID_NOTE, "valid"),
    ):
        table = parents_table(recs, fmt, split)
        if not table:
            continue
        if fmt == "html":
            out.append(f"<h2>{title}</h2>\n<p>{html.escape(note)}</p>\n{table}")
        else:
            out.append(f"\n{note}\n\n{table}")
    return "\n".join(out) if fmt == "html" else "".join(out)


SCORE_NOTE = (
    "Against the tuned baseline (each task's best tuned hand-designed row): a loss is "
    f"floored at {scoring.FLOOR:g} × the task's initial training loss before the ratio "
    "optimizer / baseline is taken, so a zero loss ties with any loss that small instead of "
    "scoring a ratio of 0; a diverged row counts as worse and stays out of the geometric "
    "mean; higher-is-better metrics count wins only."
)


_TEX = {  # one character at a time, so no replacement is escaped twice
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "_": r"\_",
    "#": r"\#",
    "$": r"\$",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "×": r"$\times$",
    "µ": r"$\mu$",
    "σ": r"$\sigma$",
    "λ": r"$\lambda$",
    "|": r"$|$",
}


def render_table(headers: list[str], body: list[list[str]], fmt: str, bold=None) -> str:
    """`body` under `headers` as Markdown, LaTeX (booktabs) or an HTML <table>; the rows
    flagged in `bold` in bold (class "best" in HTML)."""
    bold = bold or [False] * len(body)
    if fmt == "md":
        lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        for cells, b in zip(body, bold, strict=True):
            cells = [_cell(c) for c in cells]
            if b:
                cells = [f"**{c}**" for c in cells]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"
    if fmt == "latex":

        def tex(text):
            return "".join(_TEX.get(ch, ch) for ch in text)

        lines = [
            r"\begin{tabular}{" + "l" * len(headers) + "}",
            r"\toprule",
            " & ".join(tex(h) for h in headers) + r" \\",
            r"\midrule",
        ]
        for cells, b in zip(body, bold, strict=True):
            cells = [tex(c) for c in cells]
            if b:
                cells = [r"\textbf{" + c + "}" for c in cells]
            lines.append(" & ".join(cells) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}"]
        return "\n".join(lines) + "\n"
    if fmt == "html":
        import html

        head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
        trs = []
        for cells, b in zip(body, bold, strict=True):
            tds = "".join(f"<td>{html.escape(c)}</td>" for c in cells)
            trs.append(f'<tr class="best">{tds}</tr>' if b else f"<tr>{tds}</tr>")
        return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(trs)}</tbody></table>\n"
    raise ValueError(f"unknown table format {fmt!r}; formats: md, latex, html")


# --------------------------------------------------------------------------- the report

FORMATS = ("md", "csv", "latex", "html")
FIGURES = (
    "loss_curves",
    "metric_curves",
    "hand_share",
    "sigma_histograms",
    "lgl2o_choice",
    "step_times",
)

PAGE_STYLE = """\
body { font-family: sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { color: #1f3b73; border-bottom: 4px solid #1f3b73; }
table { border-collapse: collapse; margin: 1em 0; font-size: 13px; }
th, td { border: 1px solid #bbb; padding: 3px 8px; text-align: left; }
th { background: #1f3b73; color: white; }
tr.best td { font-weight: bold; background: #d8f0d8; }
pre { background: #f4f4f4; padding: 8px; white-space: pre-wrap; font-size: 11px; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.5em 0; }
"""  # the HTML pages' look (the report's and the claims')

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>hubopt report</title>
<style>
{style}</style></head><body>
<h1>hubopt report</h1>
<p>{count} records; every number and figure below is computed from them alone.
Bold rows: the best mean metric of the task among rows where no seed diverged.</p>
<h2>Results</h2>
{results}
{scores}
<h2>Training loss</h2>
{losses}
<h2>Figures</h2>
{figures}
<h2>How this was made</h2>
<pre>{provenance}</pre>
</body></html>
"""


def html_page(recs: list[dict], figures: dict[str, bytes], report_command: str | None) -> str:
    """One self-contained HTML page: the tables, the figures as embedded PNGs, provenance."""
    import base64
    import html

    rows = summarize(recs)
    scores = score_table(recs, "html")
    scores = f"<h2>Scores</h2>\n<p>{html.escape(SCORE_NOTE)}</p>\n{scores}" if scores else ""
    parents = parents_section(recs, "html")
    if parents:
        scores += "\n" + parents
    loss_body = [
        [
            r.task,
            r.label,
            r.learned,
            str(r.num_steps),
            ",".join(map(str, r.seeds)),
            f"{_g(r.best[0])} [{_g(r.best[1])}, {_g(r.best[2])}]",
            f"{_g(r.final[0])} [{_g(r.final[1])}, {_g(r.final[2])}]",
        ]
        for r in rows
    ]
    loss_headers = [
        "task",
        "optimizer",
        "learned slot",
        "steps",
        "seeds",
        "best loss",
        "final loss",
    ]
    images = "\n".join(
        f'<h3>{html.escape(name.replace("_", " "))}</h3>\n<img alt="{name}" '
        f'src="data:image/png;base64,{base64.b64encode(png).decode()}">'
        for name, png in figures.items()
    )
    return _PAGE.format(
        style=PAGE_STYLE,
        count=len(recs),
        results=results_table(recs, "html"),
        scores=scores,
        losses=render_table(loss_headers, loss_body, "html"),
        figures=images or "<p>(no figures)</p>",
        provenance=html.escape(provenance(recs, report_command)),
    )


def markdown_report(recs: list[dict], report_command: str | None = None) -> str:
    """table.md's text: the results table, the loss table, the tasks' metrics, the tuned
    baselines' choices and the provenance."""
    rows = summarize(recs)
    md = "Results (the final params' metrics, on test unless a row says otherwise; best per "
    md += "task in bold):\n\n"
    md += results_table(recs, "md")
    scores = score_table(recs, "md")
    if scores:
        md += "\n" + SCORE_NOTE + "\n\n" + scores
    md += parents_section(recs, "md")
    md += "\nTraining and validation loss:\n\n"
    md += markdown_table(rows)
    task_metrics = metrics_table(recs)
    if task_metrics:
        md += "\nThe tasks' own metrics of the final params (mean ± std over seeds):\n\n"
        md += task_metrics
    if any(r.learned.endswith("(NOT learned)") for r in rows):
        md += (
            '\n"NOT learned": a hand-designed optimizer stood in for the learned one '
            "(no learned optimizer was available).\n"
        )
    tuned = tuned_results(recs)
    if tuned:
        md += "\nTuned baselines (learning rate chosen on the valid split, mean over seeds):\n\n"
        for result, sel in tuned:
            grid = ", ".join(f"{row['learning_rate']:g}: {row['mean']:.4g}" for row in sel["grid"])
            chosen = f"{sel['learning_rate']:g}"
            md += f"- {result.task}: valid {sel['metric']} by rate {grid} → {chosen}\n"
    md += "\n```\n" + provenance(recs, report_command) + "\n```\n"
    return md


RESULTS_BLOCK = re.compile(
    r"(?P<open><!-- results: (?P<folder>\S+) -->\n)(?P<body>.*?)(?P<close><!-- end results -->)",
    re.S,
)


def _fill_results(text: str, root: str | Path) -> str:
    """`text` with each results block (the lines between `<!-- results: FOLDER -->` and
    `<!-- end results -->`) replaced by the results table of the records in FOLDER
    (relative to `root`), with its score and against-the-parents tables."""

    def table(match: re.Match) -> str:
        recs = records.read_all([Path(root) / match["folder"]])
        scores = score_table(recs, "md")
        scores = f"\n{SCORE_NOTE}\n\n{scores}" if scores else ""
        parents = parents_section(recs, "md")
        return match["open"] + results_table(recs, "md") + scores + parents + match["close"]

    return RESULTS_BLOCK.sub(table, text)


def generated_blocks(text: str) -> list[str]:
    """Every generated block of `text`, of each kind `fill` rewrites."""
    from hubopt.bench import claims_page, sigma_choice

    kinds = (RESULTS_BLOCK, sigma_choice.SIGMA_CHOICE_BLOCK, claims_page.CLAIMS_BLOCK)
    return [m[0] for kind in kinds for m in kind.finditer(text)]


def fill(
    text: str, root: str | Path = ".", command: str = "hubopt report --fill"
) -> tuple[str, dict[Path, bytes]]:
    """`text` with every generated block made anew from the records in its folders
    (relative to `root`), and {path: bytes} of the files that go beside it; nothing is
    written here. So a document's tables (BENCHMARKS.md, RESULTS.md) are made from
    committed records by one command (`hubopt report --fill FILE`), and a test can check
    that they still are. The kinds of block:

        <!-- results: FOLDER -->          results, score and against-the-parents tables
        <!-- sigma-choice: STUDY SCALE --> the σ rule's choice (`sigma_choice.fill_blocks`)
        <!-- claims: FOLDER FIGURES -->    the paper's claims, with each claim's figure and
                                           an index.html in FIGURES (`claims_page.fill_blocks`)

    each closed by `<!-- end results -->`, `<!-- end sigma-choice -->`, `<!-- end claims -->`.
    """
    from hubopt.bench import claims_page, sigma_choice

    text = _fill_results(text, root)
    text = sigma_choice.fill_blocks(text, root)
    return claims_page.fill_blocks(text, root, command)


def report(
    paths, out_dir, *, report_command: str | None = None, formats=("md", "csv")
) -> dict[str, Path]:
    """Reads the records in `paths` and writes the report in `formats` (of `FORMATS`) and
    the figures the records support; returns {name: path} of what it wrote."""
    from hubopt.bench import figures

    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown report format(s) {unknown}; formats: {', '.join(FORMATS)}")
    recs = records.read_all(paths)
    if not recs:
        raise records.RecordError(f"no records found in {', '.join(map(str, paths))}")
    rows = summarize(recs)
    out = Path(out_dir)
    note = provenance(recs, report_command)
    if any(r.learned.endswith("(NOT learned)") for r in rows):
        note = (
            "stand-in = a hand-designed optimizer in the learned slot (no learned optimizer "
            "was available); these are NOT results of a learned optimizer.\n" + note
        )
    pngs = {name: getattr(figures, name)(recs, note) for name in FIGURES}
    pngs = {name: png for name, png in pngs.items() if png is not None}
    files: dict[str, Path] = {}
    for name, png in pngs.items():
        files[name] = out / f"{name}.png"
        write_atomic(files[name], png)
    if "md" in formats:
        md = markdown_report(recs, report_command)
        files["table_md"] = out / "table.md"
        write_atomic(files["table_md"], md.encode())
    tuned = tuned_results(recs)
    if tuned:
        import json

        # JSON lines, not *.json: a records folder's report must not look like a record
        files["tuned"] = out / "tuned.jsonl"
        lines = [json.dumps({"task": r.task, **sel}, sort_keys=True) for r, sel in tuned]
        write_atomic(files["tuned"], ("\n".join(lines) + "\n").encode())
    if "csv" in formats:
        files["table_csv"] = out / "table.csv"
        write_atomic(files["table_csv"], csv_table(rows).encode())
    if "latex" in formats:
        files["table_tex"] = out / "table.tex"
        tex = "% " + provenance(recs, report_command).replace("\n", "\n% ") + "\n"
        write_atomic(files["table_tex"], (tex + results_table(recs, "latex")).encode())
    if "html" in formats:
        files["html"] = out / "index.html"
        write_atomic(files["html"], html_page(recs, pngs, report_command).encode())
    if "loss_curves" in files:
        files["figure"] = files["loss_curves"]  # the name callers used before
    return files


# --------------------------------------------------------------------------- CLI: hubopt report


def add_arguments(parser) -> None:
    parser.add_argument("records", nargs="*", help="record files or folders of records")
    parser.add_argument(
        "--fill",
        metavar="FILE",
        help="instead: rewrite FILE's generated blocks from the records in their folders "
        "(relative to FILE's folder): results tables (<!-- results: FOLDER --> … <!-- end "
        "results -->), the σ rule's choice (<!-- sigma-choice: STUDY SCALE --> … <!-- end "
        "sigma-choice -->) and the paper's claims (<!-- claims: FOLDER FIGURES --> … <!-- "
        "end claims -->, with each claim's figure and an index.html in FIGURES)",
    )
    parser.add_argument("--out", default="runs/report", help="output folder (default: runs/report)")
    parser.add_argument(
        "--format",
        dest="formats",
        action="append",
        choices=FORMATS,
        help="md, csv, latex or html (repeatable; default: md and csv)",
    )


def run(args) -> int:
    if args.fill:
        return _fill(args.fill)
    if not args.records:
        print(
            "hubopt report: error: give record files or folders (or --fill FILE)", file=sys.stderr
        )
        return 2
    command = getattr(args, "command_line", None) or "hubopt report"
    formats = tuple(args.formats or ("md", "csv"))
    try:
        files = report(args.records, args.out, report_command=command, formats=formats)
    except records.RecordError as e:
        print(f"hubopt report: error: {e}", file=sys.stderr)
        return 1
    if "table_md" in files:
        print(files["table_md"].read_text(), end="")
    for name, f in files.items():
        if name != "figure":
            print(f"wrote {f}")
    return 0


def _fill(path: str) -> int:
    file = Path(path)
    try:
        text = file.read_text()
        blocks = generated_blocks(text)
        if not blocks:
            print(
                f"hubopt report: error: {file} has no generated blocks (<!-- results: FOLDER "
                "-->, <!-- sigma-choice: STUDY SCALE -->, <!-- claims: FOLDER FIGURES -->)",
                file=sys.stderr,
            )
            return 1
        filled, beside = fill(text, file.parent, f"hubopt report --fill {file.name}")
    except (OSError, ValueError) as e:  # a RecordError, or a claim's roles in conflict
        print(f"hubopt report: error: {e}", file=sys.stderr)
        return 1
    for target, data in beside.items():  # claims' figures and page, rewritten only if changed
        if not target.is_file() or target.read_bytes() != data:
            write_atomic(target, data)
            print(f"wrote {target}")
    if filled != text:
        write_atomic(file, filled.encode())
    state = "rewritten" if filled != text else "up to date"
    print(f"{file}: {len(blocks)} generated blocks {state}")
    return 0
