r"""Which σ rule hubopt recommends: one stated rule over the σ study's records (issue 13).

A candidate is one rule of `hubopt.SIGMA_RULES` in one mode of `hubopt.MODES`: the HUB
runs whose spec sets nothing else (no clip, no blocks). Everything is judged on the valid
split (a choice is never made on test), from `report.parent_trios` (each mixture beside
its hand and its learned member run alone, means over the seeds all three share). A
candidate qualifies when

    complete  it ran every study task (`sweep.SIGMA_TASKS`) on ≥ STUDY_SEEDS seeds
              shared with its parents;
    goals     over those tasks it meets HUB's goals against the parents
              (`scoring.parent_goals`): never below the worse parent nor NaN where a
              parent is finite, matching the better one or beating both on ≥ 70% of the
              tasks, beating both on ≥ 30%;
    scale     on each loss-scale task (`sweep.SCALE_TASKS`) its mean metric m_c at
              loss × 10⁻³ and × 10³ is m₁'s (× 1) within SCALE_TOLERANCE (relative) or
              within two standard errors of the difference (`scoring.two_standard_errors`:
              |m_c − m₁| ≤ 2 √(s_c²/n_c + s₁²/n₁)). A scale not run fails.

Qualifiers are ranked by the tasks on which they beat both parents, then those on which
they match the better one, then the mean margin over the better parent
(`scoring.parent_margin`), more first; a full tie goes to the rule listed first in
SIGMA_RULES, default mode first. The first is the choice.

With none qualifying the closest is named: the candidates that ran a study task in full
are ranked on the tasks all of them ran in full (the common tasks) by the conditions they
fail there (each goal, and scale; fewest first), then as above.

`hubopt.RECOMMENDED_SIGMA` is the choice's rule, None while there is none
(tests/test_sigma_choice.py holds it to `choose` on the committed records; a choice in
inverted mode needs `hubopt.RECOMMENDED_MODE` too). The bundled optimizer's 13 held-out
tasks (benchmarks/records/lopt_cpu) are not in the rule: they are the learned optimizer's
own yardstick (its training distribution), not the suite HUB promises its goals on.
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass
from pathlib import Path

from hubopt.bench import records, report, scoring, sweep

__all__ = [
    "SIGMA_CHOICE_BLOCK",
    "Choice",
    "Standing",
    "candidate_of",
    "choice_section",
    "choice_summary",
    "choice_table",
    "choose",
    "fill_blocks",
    "scale_misses",
]

STUDY_SEEDS = 3  # a task counts once a candidate and its parents share this many seeds
SCALE_TOLERANCE = 0.02  # the same metric at another loss scale: within 2% ...
# ... or within two standard errors of the difference (scoring.two_standard_errors)
SCALES = tuple(c for c in sweep.LOSS_SCALES if c is not None)  # 10⁻³ and 10³
_PLAIN_HUB = {"name", "hand", "learned", "mode", "sigma"}  # keys of a rule's run


def candidate_of(spec: dict) -> tuple[str, str] | None:
    """(σ rule, mode) of a HUB spec that sets nothing else; None for any other spec."""
    if spec.get("name") != "hub" or not set(spec) <= _PLAIN_HUB:
        return None
    return spec.get("sigma", "softmax"), spec.get("mode", "default")


@dataclass(frozen=True)
class Standing:
    """One candidate: its study tasks run in full (with their `ParentTrio`s), the study
    tasks it lacks, and what the scale check misses."""

    rule: str
    mode: str
    trios: dict[str, report.ParentTrio]  # task -> trio, the tasks run in full
    missing: tuple[str, ...]  # study tasks not run in full ("task (seeds 0,1)" if in part)
    scale: tuple[str, ...]  # what the loss-scale check misses; () when met
    study_tasks: int  # how many tasks the study has

    def counts(self, tasks=None) -> dict[str, int]:
        """Its verdicts per `scoring.PARENT_CLASSES` class over `tasks` (default: its own)."""
        out = dict.fromkeys(scoring.PARENT_CLASSES, 0)
        for t in self._on(tasks):
            out[t.verdict] += 1
        return out

    def margin(self, tasks=None) -> float:
        """The mean `scoring.parent_margin` over `tasks` (those with a finite parent);
        NaN when there is none."""
        margins = [t.margin for t in self._on(tasks) if not math.isnan(t.margin)]
        return statistics.fmean(margins) if margins else math.nan

    def goal_misses(self, tasks=None) -> list[str]:
        """`scoring.parent_goals` over `tasks` (default: its own); ["no task"] for none."""
        on = self._on(tasks)
        return scoring.parent_goals(self.counts(tasks)) if on else ["no task"]

    @property
    def misses(self) -> list[str]:
        """Every condition it fails (complete, goals over its tasks, scale); [] qualifies."""
        out = []
        if self.missing:
            out.append(f"{len(self.missing)} of {self.study_tasks} tasks not run in full")
        if self.trios:
            out += self.goal_misses()
        return out + ([f"loss scale: {'; '.join(self.scale)}"] if self.scale else [])

    def _on(self, tasks) -> list[report.ParentTrio]:
        return [self.trios[t] for t in (self.trios if tasks is None else tasks) if t in self.trios]


@dataclass(frozen=True)
class Choice:
    """`standings` in rank order (`ranked` of them ranked, on the tasks `ranked_on`); the
    recommended candidate, or else the closest; both None when nothing could be ranked."""

    standings: list[Standing]
    ranked: int
    ranked_on: tuple[str, ...]
    recommended: Standing | None
    closest: Standing | None


def _key(s: Standing, tasks, failures: int, order: dict) -> tuple:
    counts, margin = s.counts(tasks), s.margin(tasks)
    return (
        failures,
        -counts["beats both"],
        -counts["matches the better"],
        -margin if not math.isnan(margin) else math.inf,
        order[(s.rule, s.mode)],
    )


def scale_misses(
    scale_results: dict[tuple[str, str, str], report.Result], rule: str, mode: str, tasks
) -> tuple[str, ...]:
    """What the loss-scale check misses for (rule, mode) over `tasks`, from its valid
    `Result`s keyed (task name, rule, mode), the scaled tasks named by
    `loss_scaled_name`; () when met."""
    from hubopt.tasks.base import loss_scaled_name

    out = []
    for task in tasks:
        base = scale_results.get((task, rule, mode))
        if base is None:
            out.append(f"{task} not run")
            continue
        for c in SCALES:
            name = loss_scaled_name(task, c)
            other = scale_results.get((name, rule, mode))
            if other is None:
                out.append(f"{name} not run")
            elif not (base.finite and other.finite):
                out.append(f"{name} or {task} diverged")
            else:
                diff = abs(other.mean - base.mean)
                noise = scoring.two_standard_errors(other.values, base.values)
                if diff <= SCALE_TOLERANCE * abs(base.mean) or diff <= noise:
                    continue
                rel = diff / abs(base.mean) if base.mean else math.inf
                out.append(f"{name} {other.mean:.4g} against {base.mean:.4g} ({rel:.1%})")
    return tuple(out)


def _by_candidate(items, what: str) -> dict:
    """{(task, rule, mode): item} of the items whose spec is a candidate's; two items of
    one candidate on one task (say, with two learned members) are an error."""
    out = {}
    for task, spec, item in items:
        cand = candidate_of(spec)
        if cand is None:
            continue
        if (task, *cand) in out:
            raise ValueError(f"two {what} of σ rule {cand[0]} ({cand[1]}) on {task}")
        out[(task, *cand)] = item
    return out


def choose(
    study: list[dict],
    scale: list[dict],
    tasks=sweep.SIGMA_TASKS,
    scale_tasks=sweep.SCALE_TASKS,
    rules=None,
    modes=None,
) -> Choice:
    """The choice (module docstring) from the study's records `study` and the loss-scale
    sweep's records `scale`, over `tasks` and `scale_tasks`; every rule of `rules`
    (default: `hubopt.SIGMA_RULES`) in every mode of `modes` (default: `hubopt.MODES`)."""
    import hubopt

    rules = tuple(hubopt.SIGMA_RULES if rules is None else rules)
    modes = tuple(hubopt.MODES if modes is None else modes)
    order = {(r, m): i for i, (r, m) in enumerate((r, m) for r in rules for m in modes)}
    trios = _by_candidate(
        ((t.task, t.spec, t) for t in report.parent_trios(study, "valid")), "runs"
    )
    spec_of = {(r["task"]["name"], r["optimizer"]["label"]): r["optimizer"]["spec"] for r in scale}
    scale_results = _by_candidate(
        ((r.task, spec_of[(r.task, r.label)], r) for r in report.results(scale, "valid")),
        "loss-scale runs",
    )
    standings = []
    for rule, mode in order:
        full, missing = {}, []
        for task in tasks:
            trio = trios.get((task, rule, mode))
            if trio is not None and len(trio.seeds) >= STUDY_SEEDS:
                full[task] = trio
            elif trio is not None:
                missing.append(f"{task} (seeds {','.join(map(str, trio.seeds))})")
            else:
                missing.append(task)
        misses = scale_misses(scale_results, rule, mode, scale_tasks)
        standings.append(Standing(rule, mode, full, tuple(missing), misses, len(tasks)))

    qualified = [s for s in standings if not s.misses]
    if qualified:
        ranked_on = tuple(tasks)
        ranked = sorted(qualified, key=lambda s: _key(s, None, 0, order))
    else:
        runners = [s for s in standings if s.trios]
        common = set(tasks).intersection(*(s.trios for s in runners)) if runners else set()
        ranked_on = tuple(t for t in tasks if t in common)

        def key(s: Standing) -> tuple:  # the conditions failed on the common tasks first
            failures = len(s.goal_misses(ranked_on)) + bool(s.scale)
            return _key(s, ranked_on, failures, order)

        ranked = sorted(runners, key=key) if ranked_on else []
    rest = [s for s in standings if s not in ranked]
    return Choice(
        standings=ranked + rest,
        ranked=len(ranked),
        ranked_on=ranked_on,
        recommended=ranked[0] if qualified else None,
        closest=ranked[0] if ranked and not qualified else None,
    )


# ------------------------------------------------------------------------------ the table

CHOICE_HEADERS = [
    "rank",
    "σ rule",
    "mode",
    "study tasks in full",
    *scoring.PARENT_CLASSES,
    "mean margin",
    "loss × 10⁻³, 10³",
    "fails",
]


def _percent(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:+.1%}"


def choice_table(choice: Choice, fmt: str = "md") -> str:
    """Every candidate in rank order: its tasks run in full, its verdicts against the
    parents and mean margin on the ranked tasks, the scale check and what it fails."""
    body = []
    for i, s in enumerate(choice.standings):
        on = choice.ranked_on
        counts = s.counts(on)
        body.append(
            [
                str(i + 1) if i < choice.ranked else "-",
                s.rule,
                s.mode,
                f"{len(s.trios)} of {s.study_tasks}",
                *(str(counts[k]) for k in scoring.PARENT_CLASSES),
                _percent(s.margin(on)),
                "met" if not s.scale else "missed",
                "; ".join(s.misses) or "none",
            ]
        )
    bold = [s is choice.recommended or s is choice.closest for s in choice.standings]
    return report.render_table(CHOICE_HEADERS, body, fmt, bold)


def _not_run(standings: list[Standing]) -> str:
    """Which study tasks which candidates have not run in full, grouped."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for s in standings:
        if s.missing:
            groups.setdefault(s.missing, []).append(f"{s.rule} ({s.mode})")
    if not groups:
        return "Every candidate has run every study task in full."
    everyone = [f"{s.rule} ({s.mode})" for s in standings]
    parts = []
    for missing, names in groups.items():
        others = [n for n in everyone if n not in names]
        who = ", ".join(names)
        if not others:
            who = "every candidate"
        elif len(others) < len(names):
            who = f"every candidate but {', '.join(others)}"
        parts.append(f"by {who}: {', '.join(missing)}")
    return f"Not run in full (≥ {STUDY_SEEDS} seeds) {'; '.join(parts)}."


def choice_summary(choice: Choice) -> str:
    """One paragraph: the choice, or that there is none and which candidate came closest."""
    on = choice.ranked_on
    if choice.recommended is not None:
        s = choice.recommended
        c = s.counts(on)
        return (
            f"Recommended: `{s.rule}` ({s.mode} mode), the first of {choice.ranked} qualifying "
            f"candidates: on the {len(on)} study tasks it beats both parents on "
            f"{c['beats both']} and matches the better on {c['matches the better']}, mean "
            f"margin {_percent(s.margin(on))} (`hubopt.RECOMMENDED_SIGMA`)."
        )
    text = _not_run(choice.standings) + " "
    text += "Recommended: none, no candidate meets every condition (`hubopt.RECOMMENDED_SIGMA` "
    text += "is None)."
    if choice.closest is None:
        return text + " No task was run in full by every candidate, so none is ranked."
    s = choice.closest
    c = s.counts(on)
    met = s.goal_misses(on) + (["loss scale"] if s.scale else [])
    return text + (
        f" Closest: `{s.rule}` ({s.mode} mode), ranked on the {len(on)} tasks every "
        f"candidate has run in full ({', '.join(on)}): beats both parents on "
        f"{c['beats both']}, matches the better on {c['matches the better']}, mean margin "
        f"{_percent(s.margin(on))}; there it misses "
        f"{'; '.join(met) if met else 'no goal'}, and it fails: {'; '.join(s.misses)}."
    )


CHOICE_NOTE = (
    "The choice of σ rule (`hubopt.bench.sigma_choice`; valid split; every rule of "
    "`hubopt.SIGMA_RULES` in both modes). A candidate qualifies when it ran every study "
    f"task on ≥ {STUDY_SEEDS} seeds shared with its parents, meets HUB's goals against the "
    "parents there (never below the worse nor NaN; matching the better or beating both on "
    f"≥ {scoring.GOAL_MATCH:.0%}; beating both on ≥ {scoring.GOAL_BEAT:.0%}), and gives the "
    f"same valid metric at loss × 10⁻³ and × 10³ as at × 1 (within {SCALE_TOLERANCE:.0%} or "
    "two standard errors). Qualifiers rank by tasks beating both parents, then "
    "matching the better, then the mean margin over the better parent; with none "
    "qualifying, the candidates that ran a study task in full are ranked on the tasks all "
    "of them ran in full, fewest conditions failed there first. Counts and margins are on "
    'the ranked tasks; "fails" is what keeps a candidate from qualifying.'
)


def choice_section(study: list[dict], scale: list[dict]) -> str:
    """The note, the table and the summary, in Markdown."""
    choice = choose(study, scale)
    ranked = f"Ranked on: {', '.join(choice.ranked_on) or 'no task'}."
    return f"{CHOICE_NOTE} {ranked}\n\n{choice_table(choice)}\n{choice_summary(choice)}\n"


SIGMA_CHOICE_BLOCK = re.compile(
    r"(?P<open><!-- sigma-choice: (?P<study>\S+) (?P<scale>\S+) -->\n)(?P<body>.*?)"
    r"(?P<close><!-- end sigma-choice -->)",
    re.S,
)


def fill_blocks(text: str, root: str | Path = ".") -> str:
    """`text` with each `<!-- sigma-choice: STUDY SCALE -->` … `<!-- end sigma-choice -->`
    block replaced by the choice made from the records in the folders STUDY (the σ study)
    and SCALE (the loss-scale sweep), relative to `root`."""

    def section(match: re.Match) -> str:
        study = records.read_all([Path(root) / match["study"]])
        scale = records.read_all([Path(root) / match["scale"]])
        return match["open"] + choice_section(study, scale) + match["close"]

    return SIGMA_CHOICE_BLOCK.sub(section, text)
