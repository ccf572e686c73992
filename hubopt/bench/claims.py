"""The paper's claims judged from records (issue 16): who is who, who beats whom, a verdict.

Each claim (`CLAIMS`) names its sweep preset (`hubopt.bench.sweep.TABLES`), the tasks it
is about, the HUB variants the paper runs there and the rivals HUB must beat. Roles are
found in a records folder by the same spec texts the sweep runs (`ROLE_SPECS`), read
against the task's preset, which is the hand member of the mixtures run on the task (so
a task on which no mixture ran has no roles: its preset is unknown):

    tuned preset    the preset's learning-rate family, the rate chosen on **valid**
                    (`report.tuned_results`); the preset's own run where one rate ran
    learned alone   VeLO where its runs are on record, else hubopt's bundled "small"
    LGL2O, HUB, inverted / block-wise / clipped HUB, HUB with the recommended σ
    AdamW           the preset with AdamW (tuned as above); the preset itself when it is
                    AdamW (Table 5's ViT)

HUB against a rival, on the mean test metric over seeds (`compare`):

    Δ = (mean_HUB − mean_rival) · (+1 if higher is better else −1)
    SE = sqrt(s²_HUB / n_HUB + s²_rival / n_rival)
    better if Δ > 2 SE, worse if Δ < −2 SE, else a tie

A one-seed side borrows the other side's sample variance (its own is unknown, not 0);
two one-seed sides tie. A side with a non-finite seed (diverged) loses to a finite one;
two such sides tie.

A HUB variant on a task: "not reproduced" if worse than any rival; "not reproduced (no
gap beyond the seeds' noise)" if it ties one; "not run yet" if it or a rival has no
run; else "reproduced". Over a claim's tasks the worst of these (in that order) holds,
and a claim's verdict is the best among the paper's variants (reproduced, not run yet,
no gap, not reproduced). The parts about VeLO's own behaviour are judged only on VeLO's
runs: with the bundled optimizer in its place they are "not testable here".
"""

from __future__ import annotations

import html
import json
import math
import re
import statistics
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from hubopt.bench import records, report, scoring, sweep

__all__ = [
    "CLAIMS",
    "Claim",
    "Comparison",
    "Contender",
    "compare",
    "fill_blocks",
    "find_roles",
    "judge",
]

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
NO_GAP = "not reproduced (no gap beyond the seeds' noise)"
NOT_RUN = "not run yet"
NOT_TESTABLE = "not testable here"
WORST_FIRST = (NOT_REPRODUCED, NO_GAP, NOT_RUN, REPRODUCED)  # combining a claim's tasks
BEST_FIRST = (REPRODUCED, NOT_RUN, NO_GAP, NOT_REPRODUCED)  # choosing among HUB variants

# ------------------------------------------------------------------------------ the rule


@dataclass(frozen=True)
class Comparison:
    """HUB against one rival: `outcome` ("better", "tie", "worse"), the signed gap Δ in
    the metric's better direction and its threshold 2 SE (NaN where no spread is known),
    and `why` in words."""

    outcome: str
    gap: float
    threshold: float
    why: str


def _finite(values: Sequence[float]) -> bool:
    return all(math.isfinite(v) for v in values)


def compare(hub: Sequence[float], rival: Sequence[float], higher_is_better: bool) -> Comparison:
    """HUB's per-seed metric `hub` against `rival`'s (see the module docstring)."""
    if not hub or not rival:
        raise ValueError("both sides need at least one seed")
    if not (_finite(hub) and _finite(rival)):
        if _finite(hub):
            return Comparison("better", math.inf, math.nan, "the rival diverged")
        if _finite(rival):
            return Comparison("worse", -math.inf, math.nan, "HUB diverged")
        return Comparison("tie", math.nan, math.nan, "both diverged")
    sign = 1.0 if higher_is_better else -1.0
    gap = sign * (statistics.fmean(hub) - statistics.fmean(rival))
    threshold = scoring.two_standard_errors(hub, rival)
    if math.isnan(threshold):
        return Comparison("tie", gap, math.nan, "one seed each: no spread known")
    numbers = f"Δ {gap:+.3g}, 2 SE {threshold:.2g}"
    if gap > threshold:
        return Comparison("better", gap, threshold, numbers)
    if gap < -threshold:
        return Comparison("worse", gap, threshold, numbers)
    return Comparison("tie", gap, threshold, numbers)


# ------------------------------------------------------------------------------ roles

TUNED = "tuned preset"
LEARNED = "learned alone"
LGL2O = "LGL2O"
ADAMW = "AdamW"
HUB = "HUB"
INVERTED = "inverted HUB"
BLOCKS = "block-wise HUB"
CLIPPED = "clipped HUB"
RECOMMENDED = "HUB, recommended σ"

# role -> the sweep's own spec text (its learned slot is then filled with the task's learned
# optimizer, `replace_learned`); TUNED is the
# preset's learning-rate family ("preset" and its rates)
ROLE_SPECS = {
    TUNED: "preset",
    ADAMW: "adamw",
    LEARNED: "small",
    LGL2O: "lgl2o:preset+small",
    HUB: "hub:preset+small",
    INVERTED: "hub:preset+small,mode=inverted",
    BLOCKS: "hub:preset+small,blocks=finetune",
    CLIPPED: f"hub:preset+small,clip={sweep.CLIP}",
}
LEARNED_TEXTS = ("velo", "small")  # the first with a mixture on record fills the slot
TUNED_ROLES = (TUNED, ADAMW)  # hand roles: their learning-rate family, tuned on valid


def recommended_sigma() -> str | None:
    """The σ rule hubopt recommends (`hubopt.RECOMMENDED_SIGMA`), None while there is none."""
    import hubopt

    return getattr(hubopt, "RECOMMENDED_SIGMA", None)


def role_specs() -> dict[str, str]:
    """`ROLE_SPECS`, with HUB at the recommended σ once hubopt names one."""
    rule = recommended_sigma()
    return {**ROLE_SPECS, **({RECOMMENDED: f"hub:preset+small,sigma={rule}"} if rule else {})}


@dataclass(frozen=True)
class Contender:
    """One role on one task: its results row (`report.Result`, the tuned label for a tuned
    role) and the records behind it."""

    role: str
    result: report.Result
    records: tuple[dict, ...] = field(repr=False)


def _same_runs(c: Contender) -> tuple:
    """Which runs a contender is (two roles may be one run set)."""
    return tuple(sorted((r["optimizer"]["label"], r["seed"]) for r in c.records))


@dataclass(frozen=True)
class TaskRoles:
    """The contenders found on a task, with the learned optimizer's spec text and the
    preset (None when no mixture ran on the task, and so no role is known)."""

    task: str
    learned: str | None
    preset: dict | None
    contenders: dict[str, Contender]


@dataclass(frozen=True)
class _PresetOnly:
    """What `spec_language.parse` reads of a task: its preset (`hand`), here the one the
    records show."""

    hand: dict


def _key(spec: dict) -> str:
    return json.dumps(spec, sort_keys=True)


def _spec(text: str, preset: dict, learned: str) -> dict:
    """The spec dict of the sweep's spec text `text` on a task whose preset is `preset`,
    with the learned optimizer `learned` (a spec text) in its learned slot, as
    `hubopt sweep --learned` puts it there (`spec_language.replace_learned`)."""
    from hubopt.bench import spec_language

    spec = spec_language.parse(text, _PresetOnly(preset))
    return spec_language.replace_learned(spec, spec_language.parse(learned)).to_dict()


def _family(spec: dict) -> str:
    return _key({k: v for k, v in spec.items() if k != "learning_rate"})


def find_roles(recs: list[dict], task: str) -> TaskRoles:
    """The roles of `role_specs()` found among `recs` on `task` (see the module docstring).

    The mixtures (HUB, LGL2O, blends) with the chosen learned member must share one hand
    member, the preset; a `ValueError` names them when they do not."""
    from hubopt.bench import spec_language

    mine = [r for r in recs if r["task"]["name"] == task]
    specs = [r["optimizer"]["spec"] for r in mine]
    mixtures = [s for s in specs if s.get("name") in spec_language.COMBINED_NAMES]
    learned = None
    for text in LEARNED_TEXTS:
        member = spec_language.parse(text).to_dict()
        if any(_key(s["learned"]) == _key(member) for s in mixtures):
            learned = text
            break
    if learned is None:
        return TaskRoles(task, None, None, {})
    member = _key(spec_language.parse(learned).to_dict())
    hands = {_key(s["hand"]) for s in mixtures if _key(s["learned"]) == member}
    if len(hands) != 1:
        raise ValueError(
            f"{task}: the mixtures with {learned} disagree on their hand member (the preset): "
            + "; ".join(sorted(hands))
        )
    preset = json.loads(hands.pop())
    by_spec: dict[str, list[dict]] = defaultdict(list)
    for r in mine:
        by_spec[_key(r["optimizer"]["spec"])].append(r)
    rows = {r.label: r for r in report.results(mine)}
    tuned = report.tuned_results(mine)
    contenders = {}
    for role, text in role_specs().items():
        spec = _spec(text, preset, learned)
        runs = by_spec.get(_key(spec))
        if role in TUNED_ROLES:
            found = _tuned(mine, spec, rows, tuned)
            if found is not None:
                contenders[role] = Contender(role, *found)
        elif runs:
            contenders[role] = Contender(role, rows[runs[0]["optimizer"]["label"]], tuple(runs))
    return TaskRoles(task, learned, preset, contenders)


def _tuned(mine, spec, rows, tuned) -> tuple[report.Result, tuple[dict, ...]] | None:
    """The tuned row of `spec`'s learning-rate family (rate chosen on valid) and the chosen
    rate's records; else `spec`'s own runs, marked untuned; else None."""
    family = [r for r in mine if _family(r["optimizer"]["spec"]) == _family(spec)]
    for result, selection in tuned:  # the family's row: the chosen rate's runs, same values
        chosen = sorted(
            (
                r
                for r in family
                if float(r["optimizer"]["spec"]["learning_rate"]) == selection["learning_rate"]
            ),
            key=lambda r: r["seed"],
        )
        if chosen and tuple(r["seed"] for r in chosen) == result.seeds:
            if rows[chosen[0]["optimizer"]["label"]].values == result.values:
                return result, tuple(chosen)
    own = [r for r in family if _key(r["optimizer"]["spec"]) == _key(spec)]
    if not own:
        return None
    rates = {r["optimizer"]["spec"]["learning_rate"] for r in family}
    why = "one rate on record" if len(rates) == 1 else "no rate chosen on valid"
    result = rows[own[0]["optimizer"]["label"]]
    return replace(result, label=f"{result.label} (untuned: {why})"), tuple(own)


# ------------------------------------------------------------------------------ the claims


@dataclass(frozen=True)
class VeloPart:
    """A part of a claim about VeLO's own behaviour, judged on VeLO's runs only: `judge`
    takes the roles per task (VeLO in the learned slot) and returns (verdict, numbers)."""

    statement: str
    judge: Callable[[dict[str, TaskRoles]], tuple[str, str]]


def _value(c: Contender | None) -> str:
    if c is None:
        return "not run"
    return f"{report._mean_std(list(c.result.values))} ({c.result.label})"


def _velo_fails_badly(roles: dict[str, TaskRoles]) -> tuple[str, str]:
    """Table 1: VeLO alone worse than the tuned AdamW beyond noise."""
    task = roles["fmnist_mobilenet_finetune"].contenders
    learned, tuned = task.get(LEARNED), task.get(TUNED)
    if learned is None or tuned is None:
        return NOT_RUN, f"learned alone {_value(learned)}; tuned {_value(tuned)}"
    c = compare(tuned.result.values, learned.result.values, learned.result.higher_is_better)
    verdict = {"better": REPRODUCED, "tie": NO_GAP, "worse": NOT_REPRODUCED}[c.outcome]
    return verdict, f"learned alone {_value(learned)}; tuned {_value(tuned)}; {c.why}"


def _velo_diverges(roles: dict[str, TaskRoles]) -> tuple[str, str]:
    """Table 2: VeLO alone diverges (a non-finite seed) on sine_ltc."""
    learned = roles["sine_ltc"].contenders.get(LEARNED)
    if learned is None:
        return NOT_RUN, "learned alone not run"
    diverged = learned.result.diverged
    verdict = REPRODUCED if diverged else NOT_REPRODUCED
    return verdict, f"learned alone: {diverged} of {len(learned.result.values)} seeds diverged"


HUB_COST_MAX = 1.25  # "~10–15% over VeLO per step", read as at most 25%
LGL2O_COST = (1.5, 2.5)  # "about 2×"


def _step_ratios(task: TaskRoles) -> dict[str, float]:
    learned = task.contenders.get(LEARNED)
    if learned is None:
        return {}
    return {
        role: task.contenders[role].result.step_time_us / learned.result.step_time_us
        for role in (HUB, LGL2O)
        if role in task.contenders
    }


def _velo_cost(roles: dict[str, TaskRoles]) -> tuple[str, str]:
    """Table 3: HUB's step time ≤ 1.25 × VeLO's, LGL2O's 1.5–2.5 × (median over seeds)."""
    ratios = _step_ratios(roles["carracing_lstm"])
    text = ", ".join(f"{role} {r:.2f}× the learned alone's step time" for role, r in ratios.items())
    if len(ratios) < 2:
        return NOT_RUN, text or "learned alone not run"
    ok = ratios[HUB] <= HUB_COST_MAX and LGL2O_COST[0] <= ratios[LGL2O] <= LGL2O_COST[1]
    return (REPRODUCED if ok else NOT_REPRODUCED), text


@dataclass(frozen=True)
class Claim:
    """One claim of the paper, in the issue's words, and how it is tested."""

    key: str  # names its figure: claim_<key>.png
    title: str
    preset: str  # its `hubopt sweep` preset
    statement: str
    tasks: tuple[str, ...]  # the tasks it is judged on
    hubs: tuple[str, ...]  # HUB as the paper runs it there
    rivals: tuple[str, ...]  # whom HUB must beat
    others: tuple[str, ...] = ()  # HUB variants judged alongside, not the paper's
    velo: VeloPart | None = None


PAPER_ROLES = (TUNED, LEARNED, LGL2O)
CLAIMS = (
    Claim(
        "table1",
        "Table 1 / Fig. 3",
        "table1",
        "in full fine-tuning of a pretrained CNN, HUB beats both VeLO (which fails badly) "
        "and tuned AdamW.",
        ("fmnist_mobilenet_finetune",),
        (INVERTED, BLOCKS),
        (TUNED, LEARNED),
        (HUB,),
        VeloPart("VeLO fails badly (worse than the tuned AdamW)", _velo_fails_badly),
    ),
    Claim(
        "table2",
        "Table 2 / Fig. 4a",
        "table2",
        "on LTC trajectory fitting VeLO diverges (NaN) and HUB reaches by far the lowest "
        "MSE; also best on LTC lane-keeping.",
        ("sine_ltc", "carracing_ltc"),
        (HUB,),
        PAPER_ROLES,
        velo=VeloPart("VeLO diverges (NaN) on LTC trajectory fitting", _velo_diverges),
    ),
    Claim(
        "table3",
        "Table 3 / Fig. 4b",
        "table3",
        "on LSTM lane-keeping HUB has the lowest MSE; HUB costs ~10–15% over VeLO per step, "
        "LGL2O about 2×.",
        ("carracing_lstm",),
        (HUB,),
        PAPER_ROLES,
        velo=VeloPart("HUB costs ~10–15% over VeLO per step, LGL2O about 2×", _velo_cost),
    ),
    Claim(
        "table4",
        "Table 4 / Fig. 5",
        "table4",
        "HUB gives the highest PSNR in SIREN compression.",
        ("volume_siren",),
        (HUB,),
        PAPER_ROLES,
    ),
    Claim(
        "table5",
        "Table 5",
        "table5",
        "HUB beats Adam, AdamW, VeLO and LGL2O on ResNet and ViT.",
        ("fmnist_resnet", "fmnist_vit", "mnist_resnet", "mnist_vit"),
        (HUB,),
        (TUNED, ADAMW, LEARNED, LGL2O),
    ),
    Claim(
        "figure2",
        "Fig. 2",
        "figure2",
        "on the non-convex L1 function HUB escapes where the learned optimizer stalls.",
        ("nonconvex_l1cos",),
        (HUB,),
        (LEARNED,),
        (CLIPPED, INVERTED),
    ),
)

# ------------------------------------------------------------------------------ judging


@dataclass(frozen=True)
class VariantVerdict:
    """A HUB variant over a claim's tasks: its verdict and, per task, the verdict and the
    comparison with each rival (None where one side has no run)."""

    variant: str
    paper: bool
    verdict: str
    tasks: dict[str, tuple[str, dict[str, Comparison | None]]]


@dataclass(frozen=True)
class Judgement:
    claim: Claim
    verdict: str
    variants: tuple[VariantVerdict, ...]
    velo: tuple[str, str] | None  # (verdict, numbers) of the VeLO part
    roles: dict[str, TaskRoles]


def _rivals(claim: Claim, roles: TaskRoles) -> dict[str, Contender | None]:
    """The claim's rivals on a task, a role that is the same run as an earlier one left out
    (the AdamW preset is the tuned preset and Table 5's AdamW at once)."""
    out: dict[str, Contender | None] = {}
    seen = set()
    for role in claim.rivals:
        c = roles.contenders.get(role)
        if c is not None:
            if _same_runs(c) in seen:
                continue
            seen.add(_same_runs(c))
        out[role] = c
    return out


def _task_verdict(hub: Contender | None, rivals: dict[str, Contender | None]):
    comparisons: dict[str, Comparison | None] = {}
    for role, rival in rivals.items():
        if hub is None or rival is None:
            comparisons[role] = None
        else:
            comparisons[role] = compare(
                hub.result.values, rival.result.values, hub.result.higher_is_better
            )
    outcomes = {c.outcome if c else None for c in comparisons.values()}
    if "worse" in outcomes:
        return NOT_REPRODUCED, comparisons
    if "tie" in outcomes:
        return NO_GAP, comparisons
    if hub is None or None in outcomes or not comparisons:
        return NOT_RUN, comparisons
    return REPRODUCED, comparisons


def judge(recs: list[dict], claims: Sequence[Claim] = CLAIMS) -> list[Judgement]:
    """Every claim judged on `recs` (see the module docstring)."""
    out = []
    for claim in claims:
        roles = {task: find_roles(recs, task) for task in claim.tasks}
        rule = recommended_sigma()
        others = claim.others + ((RECOMMENDED,) if rule else ())
        variants = []
        for variant in claim.hubs + others:
            per_task = {
                task: _task_verdict(r.contenders.get(variant), _rivals(claim, r))
                for task, r in roles.items()
            }
            verdict = min((v for v, _ in per_task.values()), key=WORST_FIRST.index)
            variants.append(VariantVerdict(variant, variant in claim.hubs, verdict, per_task))
        paper = [v.verdict for v in variants if v.paper]
        verdict = min(paper, key=BEST_FIRST.index)
        velo = None
        if claim.velo is not None:
            if all(r.learned == "velo" for r in roles.values()):
                velo = claim.velo.judge(roles)
            else:
                velo = (NOT_TESTABLE, "needs VeLO's runs; the bundled optimizer is not VeLO")
        out.append(Judgement(claim, verdict, tuple(variants), velo, roles))
    return out


# ------------------------------------------------------------------------------ machine time


def _run_seconds(rec: dict) -> float:
    """A run's training time as measured on its machine: median step time × steps."""
    return rec["timing"]["step_time_s"] * rec["num_steps"]


@dataclass(frozen=True)
class PresetTime:
    preset: str
    runs: int  # the preset's runs at its default seeds (its tuned grid: rates on record)
    recorded: int  # of them, runs whose contender is on record
    seconds: float  # estimated training time of them all
    notes: tuple[str, ...]


def preset_time(recs: list[dict], preset: str) -> PresetTime:
    """The CPU time `hubopt sweep PRESET` (at its default seeds) would take, estimated from
    the records: each contender's median step time × steps per run; a contender not on
    record at its task's median over the task's records. The tuned grid counts the preset
    family's rates on record (its other rates are unknown without building the task)."""
    tasks, extra, seeds = sweep.TABLES[preset]
    opts = [*sweep.PAPER_CONTENDERS, *extra]
    runs = recorded = 0
    seconds = 0.0
    notes = []
    for task in tasks:
        mine = [r for r in recs if r["task"]["name"] == task]
        roles = find_roles(recs, task)
        if roles.preset is None:
            notes.append(f"{task}: no mixture on record (preset unknown), not counted")
            continue
        typical = statistics.median(_run_seconds(r) for r in mine)
        family = _family(roles.preset)
        rates = defaultdict(list)
        for r in mine:
            if _family(r["optimizer"]["spec"]) == family:
                rates[r["optimizer"]["spec"]["learning_rate"]].append(r)
        said = [f"tuned grid {len(rates)} rate{'s' * (len(rates) != 1)} on record"]
        by_spec = defaultdict(list)
        for r in mine:
            by_spec[_key(r["optimizer"]["spec"])].append(r)
        groups = list(rates.values())
        missing = []
        for text in opts:
            found = by_spec.get(_key(_spec(text, roles.preset, roles.learned)))
            groups.append(found)
            if not found:  # named with the task's learned optimizer, as --learned runs it
                missing.append(text.replace("small", roles.learned))
        for group in groups:
            per_run = statistics.median(map(_run_seconds, group)) if group else typical
            runs += seeds
            recorded += seeds if group else 0
            seconds += seeds * per_run
        if missing:
            said.append(f"{', '.join(missing)} at the task's median")
        notes.append(f"{task}: {'; '.join(said)}")
    return PresetTime(preset, runs, recorded, seconds, tuple(notes))


def task_times(recs: list[dict]) -> list[tuple[str, int, float, float]]:
    """(task, runs, Σ step time × steps, Σ wall time) of the records, per task: what the
    records cost on their machine (wall time adds compiling and evaluating)."""
    out = defaultdict(lambda: [0, 0.0, 0.0])
    for r in recs:
        row = out[r["task"]["name"]]
        row[0] += 1
        row[1] += _run_seconds(r)
        row[2] += r["timing"]["wall_time_s"]
    return [(task, *row) for task, row in sorted(out.items())]


def _hours(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


# ------------------------------------------------------------------------------ rendering

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
