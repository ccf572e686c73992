"""Tables and loss-curve figures made only from records on disk (`hubopt report`).

Nothing here sees a running process: `report(paths, out_dir)` reads the
records, groups them by (task, optimizer label, number of steps), and writes

    table.md, table.csv   best and final loss over seeds (median [min, max])
    loss_curves.png       median loss over seeds per optimizer, min–max band

Every figure carries how it was made: the commands that produced the records,
the seeds, the versions, the git commit and the report's own command.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hubopt._src.atomic_write import write_atomic
from hubopt.bench import records


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
    """ "mean ± std" over seeds (sample std); "NaN (k of n)" when some are not finite."""
    bad = [v for v in values if not math.isfinite(v)]
    if bad:
        return f"NaN ({len(bad)} of {len(values)} seeds)"
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.4g} ± {std:.2g}"


def metrics_table(recs: list[dict]) -> str:
    """The tasks' own metrics of the final params (records' `metrics`) as Markdown:
    the headline metric on the test and valid splits and every other test metric,
    mean ± std over seeds. Empty when no record has metrics."""
    groups = {k: rs for k, rs in _groups(recs).items() if all(r.get("metrics") for r in rs)}
    if not groups:
        return ""
    lines = [
        "| task | optimizer | seeds | test metric | valid metric | other test metrics |",
        "|---|---|---|---|---|---|",
    ]
    for (task, lab, _n), rs in groups.items():
        metric = rs[0]["task"].get("metric", "loss")
        better = "higher" if rs[0]["task"].get("higher_is_better") else "lower"

        def values(split, key, rs=rs):
            return [float(r["metrics"].get(split, {}).get(key, math.nan)) for r in rs]

        others = sorted(set(rs[0]["metrics"].get("test", {})) - {metric, "loss"})
        other = "; ".join(f"{k} {_mean_std(values('test', k))}" for k in others) or "-"
        lines.append(
            f"| {task} | {_cell(lab)} | {','.join(str(r['seed']) for r in rs)} "
            f"| {metric} {_mean_std(values('test', metric))} ({better} is better) "
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


def plot(recs: list[dict], path, *, report_command: str | None = None) -> Path:
    """Loss curves (median over seeds, min–max band), one panel per task, saved as PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    groups = _groups(recs)
    tasks = sorted({k[0] for k in groups})
    fig = Figure(figsize=(9, 5.2 * len(tasks) + 1.0))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(tasks), 1, squeeze=False)[:, 0]
    stand_in = False
    for ax, task in zip(axes, tasks, strict=True):
        all_positive = True
        for (t, lab, _n), rs in groups.items():
            if t != task:
                continue
            steps = rs[0]["curve"]["step"]
            same = all(r["curve"]["step"] == steps for r in rs)
            curves = [r["curve"]["loss"] for r in rs] if same else [rs[0]["curve"]["loss"]]
            loss = np.asarray(curves, np.float64)
            all_positive &= bool(np.all(loss[np.isfinite(loss)] > 0))
            slot = rs[0]["optimizer"].get("learned")
            stand_in |= bool(slot and not slot.get("is_learned"))
            seeds = ",".join(str(r["seed"]) for r in (rs if same else rs[:1]))
            (line,) = ax.plot(
                steps, np.median(loss, axis=0), lw=1.2, label=f"{lab}  (seeds {seeds})"
            )
            if len(loss) > 1:
                ax.fill_between(
                    steps,
                    loss.min(axis=0),
                    loss.max(axis=0),
                    color=line.get_color(),
                    alpha=0.2,
                    lw=0,
                )
        ax.set_yscale("log" if all_positive else "symlog")
        ax.set_xlabel("step")
        ax.set_ylabel("training loss (median over seeds; band: min to max)")
        ax.set_title(task)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8)
    note = provenance(recs, report_command)
    if stand_in:
        note = (
            "stand-in = a hand-designed optimizer in the learned slot (no learned optimizer "
            "was available); these curves are NOT results of a learned optimizer.\n" + note
        )
    fig.text(0.01, 0.005, note, fontsize=6, family="monospace", va="bottom", wrap=True)
    fig.tight_layout(rect=(0, 0.03 + 0.012 * note.count("\n"), 1, 1))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=130)
    path = Path(path)
    write_atomic(path, buf.getvalue())
    return path


def report(paths, out_dir, *, report_command: str | None = None) -> dict[str, Path]:
    """Reads the records in `paths`, writes table.md, table.csv and loss_curves.png."""
    recs = records.read_all(paths)
    rows = summarize(recs)
    out = Path(out_dir)
    md = markdown_table(rows)
    task_metrics = metrics_table(recs)
    if task_metrics:
        md += "\nThe tasks' own metrics of the final params (mean ± std over seeds):\n\n"
        md += task_metrics
    if any(r.learned.endswith("(NOT learned)") for r in rows):
        md += (
            '\n"NOT learned": a hand-designed optimizer stood in for the learned one '
            "(no learned optimizer was available).\n"
        )
    md += "\n```\n" + provenance(recs, report_command) + "\n```\n"
    files = {
        "table_md": out / "table.md",
        "table_csv": out / "table.csv",
        "figure": out / "loss_curves.png",
    }
    write_atomic(files["table_md"], md.encode())
    write_atomic(files["table_csv"], csv_table(rows).encode())
    plot(recs, files["figure"], report_command=report_command)
    return files


# --------------------------------------------------------------------------- CLI: hubopt report


def add_arguments(parser) -> None:
    parser.add_argument("records", nargs="+", help="record files or folders of records")
    parser.add_argument("--out", default="runs/report", help="output folder (default: runs/report)")


def run(args) -> int:
    command = getattr(args, "command_line", None) or "hubopt report"
    try:
        files = report(args.records, args.out, report_command=command)
    except records.RecordError as e:
        print(f"hubopt report: error: {e}", file=sys.stderr)
        return 1
    print(files["table_md"].read_text(), end="")
    for f in files.values():
        print(f"wrote {f}")
    return 0
