"""The paper's claims as a document: the claims block of RESULTS.md (Markdown), the same
on one HTML page, and one figure per claim, all made from the judgements of
`hubopt.bench.claims` (which judges; this module only renders). `fill_blocks` rewrites
each `<!-- claims: FOLDER FIGURES -->` … `<!-- end claims -->` block of a document
(`hubopt report --fill RESULTS.md`)."""

from __future__ import annotations

import html
import re
from collections import defaultdict
from pathlib import Path

from hubopt.bench import records, report, sweep
from hubopt.bench.claims import (
    Claim,
    Contender,
    Judgement,
    _same_runs,
    judge,
    preset_time,
    task_times,
)

__all__ = ["CLAIMS_BLOCK", "claim_figure", "fill_blocks", "html_page", "markdown"]


def _hours(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


CONTENDER_HEADERS = ["task", "role", "optimizer", "metric (mean ± std)", "seeds", "µs/step"]
COMPARE_HEADERS = ["HUB variant", "task", "rival", "HUB against it", "task verdict"]


def _contender_rows(j: Judgement) -> list[list[str]]:
    """One row per run set of a task, naming every role it fills."""
    body = []
    for task, roles in j.roles.items():
        names: dict[tuple, list[str]] = defaultdict(list)
        first: dict[tuple, Contender] = {}
        for role, c in roles.contenders.items():
            names[_same_runs(c)].append(role)
            first.setdefault(_same_runs(c), c)
        for runs, c in first.items():
            r, role = c.result, ", ".join(names[runs])
            direction = "higher" if r.higher_is_better else "lower"
            body.append(
                [
                    task,
                    role,
                    r.label,
                    f"{r.split} {r.metric} {report._mean_std(list(r.values))} ({direction} is "
                    "better)",
                    ",".join(map(str, r.seeds)),
                    f"{r.step_time_us:.0f}",
                ]
            )
    return body


def _compare_rows(j: Judgement) -> list[list[str]]:
    body = []
    for v in j.variants:
        for task, (verdict, comparisons) in v.tasks.items():
            if not comparisons:
                body.append([v.variant, task, "-", "-", verdict])
            for role, c in comparisons.items():
                cell = "not run" if c is None else f"{c.outcome} ({c.why})"
                body.append([v.variant, task, role, cell, verdict])
    return body


def _variant_lines(j: Judgement) -> list[str]:
    lines = []
    for v in j.variants:
        whose = "as the paper runs it" if v.paper else "not the paper's"
        lines.append(f"{v.variant} ({whose}): {v.verdict}")
    if j.velo is not None:
        lines.append(f"VeLO part, “{j.claim.velo.statement}”: {j.velo[0]} ({j.velo[1]})")
    return lines


def _learned_note(j: Judgement) -> str:
    learned = sorted({r.learned for r in j.roles.values() if r.learned})
    if not learned:
        return "no mixture on record yet"
    names = {"velo": "VeLO", "small": "hubopt's bundled learned optimizer `small` (not VeLO)"}
    return "learned slot: " + ", ".join(names.get(x, x) for x in learned)


SUMMARY_HEADERS = ["claim", "preset", "tasks", "verdict", "VeLO part"]


def _summary_rows(judgements: list[Judgement]) -> list[list[str]]:
    return [
        [
            j.claim.title,
            j.claim.preset,
            ", ".join(j.claim.tasks),
            j.verdict,
            "-" if j.velo is None else j.velo[0],
        ]
        for j in judgements
    ]


TIME_HEADERS = ["preset", "runs (default seeds)", "on record", "estimated CPU time", "notes"]
TASK_TIME_HEADERS = ["task", "runs on record", "Σ step time × steps", "Σ wall time"]


def _time_rows(recs: list[dict]) -> list[list[str]]:
    rows = []
    for name in sweep.TABLES:
        t = preset_time(recs, name)
        rows.append(
            [name, str(t.runs), str(t.recorded), _hours(t.seconds), "; ".join(t.notes) or "-"]
        )
    return rows


def _task_time_rows(recs: list[dict]) -> list[list[str]]:
    return [[t, str(n), _hours(s), _hours(w)] for t, n, s, w in task_times(recs)]


TIME_NOTE = (
    "Machine time, measured on the records' CPU (2 cores, runs side by side with other "
    "sweeps, so contended): per task, what its records took; per preset, an **estimate** of "
    "a whole `hubopt sweep PRESET` at its default seeds (step time × steps per run, without "
    "compiling and evaluating)."
)


def _has_runs(j: Judgement) -> bool:
    return any(roles.contenders for roles in j.roles.values())


def _figure_name(claim: Claim) -> str:
    return f"claim_{claim.key}.png"


def markdown(judgements, recs, folder: str, figures: str) -> str:
    """The claims block's text: the summary, each claim with its tables and figure, and the
    machine-time tables."""
    out = [
        f"Made by `hubopt report --fill` from the {len(recs)} records in `{folder}`; "
        "HUB beats a rival when its mean test metric is better by more than two standard "
        "errors of the difference (`hubopt.bench.claims`).\n",
        report.render_table(SUMMARY_HEADERS, _summary_rows(judgements), "md"),
    ]
    for j in judgements:
        out += [
            f"\n### {j.claim.title}: `hubopt sweep {j.claim.preset}`\n",
            f"The claim (the issue's words): {j.claim.statement} Rivals: "
            f"{', '.join(j.claim.rivals)}; {_learned_note(j)}.\n",
            f"**Verdict: {j.verdict}.**\n",
            *(f"- {line}" for line in _variant_lines(j)),
            "",
            report.render_table(CONTENDER_HEADERS, _contender_rows(j), "md"),
            report.render_table(COMPARE_HEADERS, _compare_rows(j), "md"),
        ]
        if _has_runs(j):
            out.append(f"![{j.claim.title}: training loss]({figures}/{_figure_name(j.claim)})")
    from hubopt.bench import ablations

    out += [
        "\n### Ablations: `hubopt sweep ablations`\n",
        ablations.markdown(recs),
        "\n### Machine time\n",
        TIME_NOTE + "\n",
        report.render_table(TASK_TIME_HEADERS, _task_time_rows(recs), "md"),
        report.render_table(TIME_HEADERS, _time_rows(recs), "md"),
    ]
    return "\n".join(out)


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>hubopt: the paper's claims</title>
<style>
{style}</style></head><body>
<h1>The HUB paper's claims, judged from the records</h1>
{body}
<h2>How this was made</h2>
<pre>{provenance}</pre>
</body></html>
"""


def html_page(judgements, recs, folder: str, note: str) -> str:
    """The claims as one HTML page beside their figures (linked, not embedded)."""
    parts = [
        f"<p>{len(recs)} records in <code>{html.escape(folder)}</code>; HUB beats a rival when "
        "its mean test metric is better by more than two standard errors of the difference.</p>",
        report.render_table(SUMMARY_HEADERS, _summary_rows(judgements), "html"),
    ]
    for j in judgements:
        lines = "".join(f"<li>{html.escape(line)}</li>" for line in _variant_lines(j))
        parts += [
            f"<h2>{html.escape(j.claim.title)}: hubopt sweep {j.claim.preset}</h2>",
            f"<p>The claim (the issue's words): {html.escape(j.claim.statement)} Rivals: "
            f"{html.escape(', '.join(j.claim.rivals))}; {html.escape(_learned_note(j))}.</p>",
            f"<p><b>Verdict: {html.escape(j.verdict)}.</b></p><ul>{lines}</ul>",
            report.render_table(CONTENDER_HEADERS, _contender_rows(j), "html"),
            report.render_table(COMPARE_HEADERS, _compare_rows(j), "html"),
        ]
        if _has_runs(j):
            alt = html.escape(f"{j.claim.title}: training loss")
            parts.append(f'<img alt="{alt}" src="{_figure_name(j.claim)}">')
    from hubopt.bench import ablations

    parts += [
        "<h2>Ablations: hubopt sweep ablations</h2>",
        ablations.html_section(recs),
        "<h2>Machine time</h2>",
        f"<p>{html.escape(TIME_NOTE.replace('**', ''))}</p>",
        report.render_table(TASK_TIME_HEADERS, _task_time_rows(recs), "html"),
        report.render_table(TIME_HEADERS, _time_rows(recs), "html"),
    ]
    return _PAGE.format(
        style=report.PAGE_STYLE, body="\n".join(parts), provenance=html.escape(note)
    )


FIGURE_WINDOWS = 100  # the training loss averaged over each 1/100 of a run
FIGURE_DPI = 72  # with a 256-colour palette the six figures are about 260 KB together


def _drawing_versions() -> str:
    """The libraries a figure's bytes depend on (a test compares PNGs only under these)."""
    import matplotlib
    import PIL

    return f"matplotlib {matplotlib.__version__}, Pillow {PIL.__version__}"


def claim_figure(j: Judgement, folder: str, command: str) -> bytes | None:
    """The training loss of the claim's contenders, one panel per task, noting how it was
    made (the page beside it has the records' full provenance)."""
    from hubopt.bench import figures

    if not _has_runs(j):
        return None
    runs = {
        (r["task"]["name"], r["optimizer"]["label"], r["seed"]): r
        for roles in j.roles.values()
        for c in roles.contenders.values()
        for r in c.records
    }  # a run set filling two roles is drawn once
    seeds = ",".join(map(str, sorted({r["seed"] for r in runs.values()})))
    note = (
        f"made from {len(runs)} records in {folder} by: {command}\n"
        f"seeds {seeds}; {_drawing_versions()}; the records' commands and versions: index.html"
    )
    png = figures.loss_curves(list(runs.values()), note, windows=FIGURE_WINDOWS, dpi=FIGURE_DPI)
    return figures.palette_png(png)


def _provenance(recs: list[dict], command: str) -> str:
    return report.provenance(recs, command) + f"\nfigures drawn with {_drawing_versions()}"


CLAIMS_BLOCK = re.compile(
    r"(?P<open><!-- claims: (?P<folder>\S+) (?P<figures>\S+) -->\n)(?P<body>.*?)"
    r"(?P<close><!-- end claims -->)",
    re.S,
)


def fill_blocks(text: str, root: str | Path = ".", command: str = "hubopt report --fill"):
    """`text` with each claims block (`<!-- claims: FOLDER FIGURES -->` … `<!-- end claims
    -->`) made from the records in FOLDER, and {path: bytes} of what goes beside it in
    FIGURES: each claim's figure and `index.html`. Paths are relative to `root`; nothing is
    written here."""
    files: dict[Path, bytes] = {}

    def block(match: re.Match) -> str:
        recs = records.read_all([Path(root) / match["folder"]])
        judgements = judge(recs)
        note = _provenance(recs, command)
        out = Path(root) / match["figures"]
        for j in judgements:
            png = claim_figure(j, match["folder"], command)
            if png is not None:
                files[out / _figure_name(j.claim)] = png
        files[out / "index.html"] = html_page(judgements, recs, match["folder"], note).encode()
        body = markdown(judgements, recs, match["folder"], match["figures"])
        return match["open"] + body + "\n" + match["close"]

    return CLAIMS_BLOCK.sub(block, text), files
