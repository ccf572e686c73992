"""The ablations (`hubopt sweep ablations`) read from records: on each of its tasks
(`sweep.ABLATION_TASKS`), every fixed-λ blend, HUB mode and LGL2O, and HUB at the
recommended σ rule, of `sweep.ablation_contenders()` beside its two parents, the task's
preset and the learned optimizer, each run alone.

A mixture against its parents, on the task's headline metric (test, or the final training
loss where that is the headline), over the seeds all three ran (`report.parent_trios`,
`scoring.versus_parents`): beats both (better than the better parent by more than 2%),
matches the better (within 2%), between, below both, or diverged. The contenders are
found by the sweep's own spec texts read against the task's preset, as the claims find
their roles (`claims.find_roles`), so a folder holding more runs (the σ study's) serves.
"""

from __future__ import annotations

import html

from hubopt.bench import claims, records, report, sweep

__all__ = ["ABLATION_HEADERS", "ablation_records", "ablation_trios", "markdown", "html_section"]

PARENT_TEXTS = ("preset", "small")  # the parents: the preset and the learned optimizer alone
ABLATION_HEADERS = [
    "task",
    "mixture",
    "metric (mean ± std)",
    "hand preset alone",
    "learned alone",
    "against the parents",
]


def _texts() -> tuple[str, ...]:
    return (*PARENT_TEXTS, *sweep.ablation_contenders())


def _contender_keys(recs: list[dict]) -> dict[str, list[str]]:
    """Per ablation task with a mixture on record, the `records.spec_key`s of the preset,
    the learned optimizer alone and the ablation contenders (in `_texts()`' order), with
    the task's learned optimizer in their slot, as `claims.find_roles` finds it."""
    out = {}
    for task in sweep.ABLATION_TASKS:
        roles = claims.find_roles(recs, task)
        if roles.preset is not None:  # no mixture on record: its preset is unknown
            out[task] = [
                records.spec_key(claims.sweep_spec(t, roles.preset, roles.learned))
                for t in _texts()
            ]
    return out


def _ablations(recs: list[dict]) -> tuple[list[dict], list[report.ParentTrio]]:
    """The ablation records of `recs` and their `report.parent_trios`, sorted by task in
    the preset's order and mixtures in `sweep.ablation_contenders()`' order (the roles found
    once)."""
    keys = _contender_keys(recs)
    mine = [
        r
        for r in recs
        if records.spec_key(r["optimizer"]["spec"]) in keys.get(r["task"]["name"], ())
    ]
    tasks = list(sweep.ABLATION_TASKS)
    trios = sorted(
        report.parent_trios(mine),
        key=lambda t: (tasks.index(t.task), keys[t.task].index(records.spec_key(t.spec))),
    )
    return mine, trios


def ablation_records(recs: list[dict]) -> list[dict]:
    """The records of `recs` that the ablations preset runs: on each ablation task, the
    preset, the learned optimizer alone and every ablation contender."""
    return _ablations(recs)[0]


def ablation_trios(recs: list[dict]) -> list[report.ParentTrio]:
    """`report.parent_trios` of the ablation records, by task in the preset's order and
    mixtures in `sweep.ablation_contenders()`' order."""
    return _ablations(recs)[1]


def _on_seeds(r: report.Result, seeds) -> str:
    """`r`'s "mean ± std" over `seeds` (the seeds a mixture and its parents share)."""
    by_seed = dict(zip(r.seeds, r.values, strict=True))
    return report._mean_std([by_seed[s] for s in seeds])


def _rows(trios: list[report.ParentTrio]) -> list[list[str]]:
    body = []
    for t in trios:
        r = t.mixture
        direction = "higher" if r.higher_is_better else "lower"
        body.append(
            [
                t.task,
                t.label,
                f"{r.split} {r.metric} {_on_seeds(r, t.seeds)} ({direction} is better; seeds "
                f"{','.join(map(str, t.seeds))})",
                _on_seeds(t.hand, t.seeds),
                _on_seeds(t.learned, t.seeds),
                t.verdict,
            ]
        )
    return body


NOTE = (
    "Every fixed-λ blend, HUB mode and LGL2O of `hubopt sweep ablations` against its two "
    "parents, the task's preset and the learned optimizer each run alone (mean ± std over "
    "the seeds all three ran, the verdict on those means; beats both = better than the "
    "better parent by more than 2%, matches the better = within 2% of it), then the same "
    "counted over the tasks with the goals HUB promises (issue 13)."
)


def _tables(recs: list[dict], fmt: str) -> list[str]:
    """The row per task and mixture and the counts over tasks in `fmt` ("md" or "html");
    [] when no ablation run is on record."""
    mine, trios = _ablations(recs)
    if not trios:
        return []
    return [
        report.render_table(ABLATION_HEADERS, _rows(trios), fmt),
        report.parents_table(mine, fmt),
    ]


def markdown(recs: list[dict]) -> str:
    """The ablations' Markdown: the note, one row per task and mixture, the counts over
    tasks; a line saying so when none is on record."""
    tables = _tables(recs, "md")
    if not tables:
        return NOTE + "\n\nNo ablation runs on record yet.\n"
    return "\n".join([NOTE + "\n", *tables])


def html_section(recs: list[dict]) -> str:
    """The same as HTML (without its heading)."""
    note = f"<p>{html.escape(NOTE.replace('`', ''))}</p>"
    tables = _tables(recs, "html")
    if not tables:
        return note + "\n<p>No ablation runs on record yet.</p>"
    return "\n".join([note, *tables])
