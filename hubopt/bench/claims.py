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

This module judges; `hubopt.bench.claims_page` renders the judgements (RESULTS.md's
claims block, the HTML page, the figures).
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from hubopt.bench import records, report, scoring, sweep

__all__ = [
    "CLAIMS",
    "Claim",
    "Comparison",
    "Contender",
    "compare",
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


def _with_learned(text: str, learned: str) -> str:
    """A role's spec text with `learned` in its learned slot ("small" alone, or after the
    hand member's "+"), the rest (options whose values hold "small") untouched."""
    return re.sub(r"(?:^|(?<=\+))small(?=,|$)", learned, text)


def role_specs() -> dict[str, str]:
    """`ROLE_SPECS`, with HUB at the recommended σ (in its mode) once hubopt names one."""
    text = sweep.recommended_contender()
    return dict(ROLE_SPECS) if text is None else {**ROLE_SPECS, RECOMMENDED: text}


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


def sweep_spec(text: str, preset: dict, learned: str) -> dict:
    """The spec dict of the sweep's spec text `text` on a task whose preset is `preset`,
    with the learned optimizer `learned` (a spec text) in its learned slot, as
    `hubopt sweep --learned` puts it there (`spec_language.replace_learned`)."""
    from hubopt.bench import spec_language

    spec = spec_language.parse(text, _PresetOnly(preset))
    return spec_language.replace_learned(spec, spec_language.parse(learned)).to_dict()


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
        if any(records.spec_key(s["learned"]) == records.spec_key(member) for s in mixtures):
            learned = text
            break
    if learned is None:
        return TaskRoles(task, None, None, {})
    member = records.spec_key(spec_language.parse(learned).to_dict())
    hands = {
        records.spec_key(s["hand"]) for s in mixtures if records.spec_key(s["learned"]) == member
    }
    if len(hands) != 1:
        raise ValueError(
            f"{task}: the mixtures with {learned} disagree on their hand member (the preset): "
            + "; ".join(sorted(hands))
        )
    preset = json.loads(hands.pop())
    by_spec: dict[str, list[dict]] = defaultdict(list)
    for r in mine:
        by_spec[records.spec_key(r["optimizer"]["spec"])].append(r)
    rows = {r.label: r for r in report.results(mine)}
    tuned = report.tuned_results(mine)
    contenders = {}
    for role, text in role_specs().items():
        spec = sweep_spec(text, preset, learned)
        runs = by_spec.get(records.spec_key(spec))
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
    family_key, spec_key = records.family_key(spec), records.spec_key(spec)
    family = [r for r in mine if records.family_key(r["optimizer"]["spec"]) == family_key]
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
    own = [r for r in family if records.spec_key(r["optimizer"]["spec"]) == spec_key]
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
    recommended = (RECOMMENDED,) if sweep.recommended_contender() else ()
    for claim in claims:
        roles = {task: find_roles(recs, task) for task in claim.tasks}
        others = claim.others + recommended
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
    recorded: int  # of them, the runs on record (seeds 0 … default − 1 of each contender)
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
        family = records.family_key(roles.preset)
        rates = defaultdict(list)
        for r in mine:
            if records.family_key(r["optimizer"]["spec"]) == family:
                rates[r["optimizer"]["spec"]["learning_rate"]].append(r)
        said = [f"tuned grid {len(rates)} rate{'s' * (len(rates) != 1)} on record"]
        by_spec = defaultdict(list)
        for r in mine:
            by_spec[records.spec_key(r["optimizer"]["spec"])].append(r)
        groups = list(rates.values())
        missing = []
        for text in opts:
            found = by_spec.get(records.spec_key(sweep_spec(text, roles.preset, roles.learned)))
            groups.append(found)
            if not found:  # named with the task's learned optimizer, as --learned runs it
                missing.append(_with_learned(text, roles.learned))
        for group in groups:
            per_run = statistics.median(map(_run_seconds, group)) if group else typical
            runs += seeds
            recorded += len({r["seed"] for r in group or () if r["seed"] < seeds})
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
