"""How an optimizer scores against a baseline over many tasks, honest about zero losses.

On one task with a lower-is-better metric (a loss), the optimizer's mean m and the
baseline's mean b are floored before they are compared:

    r = max(m, f) / max(b, f),        f = FLOOR · |L₀|,

L₀ the task's initial training loss. A loss at or below the floor (an exact 0 after
memorisation, a float32 underflow, a negative loss) counts as the floor: it ties with
any other loss that small and never makes a ratio 0, which would make the geometric
mean over tasks 0 whatever the other tasks say. FLOOR = 1e-6 is about eight float32
ulps of the initial loss, the level at which a float32 loss stops meaning much.

Over tasks an optimizer scores its wins (r < 1), ties (r = 1) and losses (r > 1)
against the baseline and the geometric mean of r. A diverged run (a seed non-finite)
is a loss on its task and stays out of the geometric mean, which says over how many
tasks it was taken. A higher-is-better metric (accuracy, PSNR, R²) enters the counts
only: a ratio of accuracies or of R²s (which can be negative) is no common scale.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "FLOOR",
    "PARENT_CLASSES",
    "Comparison",
    "Score",
    "floored_ratio",
    "parent_goals",
    "parent_margin",
    "score",
    "spike_ratio",
    "two_standard_errors",
    "versus_parents",
]

FLOOR = 1e-6


def floored_ratio(value: float, baseline: float, floor: float) -> float:
    """max(value, floor) / max(baseline, floor): < 1 when `value` is the better loss."""
    if not (math.isfinite(floor) and floor > 0.0):
        raise ValueError(f"the floor must be a positive finite number, got {floor!r}")
    if not (math.isfinite(value) and math.isfinite(baseline)):
        return math.nan
    return max(value, floor) / max(baseline, floor)


@dataclass(frozen=True)
class Comparison:
    """One task: the optimizer's mean metric against the baseline's.

    `value` is NaN when a seed of the optimizer diverged; `initial_loss` (L₀) sets the
    floor of a lower-is-better metric."""

    task: str
    value: float
    baseline: float
    higher_is_better: bool
    initial_loss: float


@dataclass(frozen=True)
class Score:
    """An optimizer over tasks: counts against the baseline and the geometric mean of the
    floored ratios (over `ratio_tasks` tasks; NaN when there are none)."""

    tasks: int
    wins: int
    ties: int
    losses: int
    diverged: int
    geometric_mean: float
    ratio_tasks: int


def score(comparisons: Iterable[Comparison], floor: float = FLOOR) -> Score:
    """The `Score` of one optimizer over `comparisons` (see the module docstring)."""
    wins = ties = losses = diverged = 0
    logs = []
    items = list(comparisons)
    for c in items:
        if not math.isfinite(c.baseline):
            raise ValueError(f"{c.task}: the baseline must be finite, got {c.baseline}")
        if not math.isfinite(c.value):
            diverged += 1
            losses += 1
            continue
        if c.higher_is_better:
            better, worse = c.value > c.baseline, c.value < c.baseline
        else:
            f = floor * abs(c.initial_loss)
            if not f > 0.0:
                raise ValueError(f"{c.task}: the initial loss must be nonzero: {c.initial_loss}")
            r = floored_ratio(c.value, c.baseline, f)
            logs.append(math.log(r))
            better, worse = r < 1.0, r > 1.0
        wins += better
        losses += worse
        ties += not (better or worse)
    geo = math.exp(math.fsum(logs) / len(logs)) if logs else math.nan
    return Score(len(items), wins, ties, losses, diverged, geo, len(logs))


# ------------------------------------------------------------------ loss spikes

SPIKE_EPSILON = 1e-3  # ε = SPIKE_EPSILON · |L₀|
SPIKE_SKIP = 0.1  # the first 10% of steps are not judged


def spike_ratio(steps, losses, initial_loss: float, num_steps: int) -> float:
    """How far a loss climbs back above its best so far (issue 12):

        max over t > SPIKE_SKIP · num_steps of  (L_t + ε) / (min_{s ≤ t} L_s + ε),
        ε = SPIKE_EPSILON · |L₀|,

    over the losses `losses` logged at `steps` (the running minimum includes the first
    10%). 1 for a loss that never rises; ε keeps a rise from 1e-9 to 1e-7 (both
    nothing next to L₀) from counting. A non-finite loss after the skip is `inf`; NaN
    when no step is judged."""
    if not (math.isfinite(initial_loss) and initial_loss != 0.0):
        raise ValueError(f"the initial loss must be finite and nonzero, got {initial_loss!r}")
    if len(steps) != len(losses):
        raise ValueError(f"{len(steps)} steps but {len(losses)} losses")
    eps = SPIKE_EPSILON * abs(initial_loss)
    best, worst = math.inf, math.nan
    for step, loss in zip(steps, losses, strict=True):
        if not math.isfinite(loss):
            if step > SPIKE_SKIP * num_steps:
                return math.inf
            continue
        best = min(best, loss)
        if step > SPIKE_SKIP * num_steps:
            ratio = (loss + eps) / (best + eps)
            worst = ratio if math.isnan(worst) else max(worst, ratio)
    return worst


# ------------------------------------------------------------------ a mixture and its parents

PARENT_TOLERANCE = 0.02  # "matches the better parent": within 2% of its metric
PARENT_CLASSES = ("beats both", "matches the better", "between", "below both", "diverged")


def _worth(x: float, higher_is_better: bool, floor: float) -> float:
    """A metric turned larger-is-better (a loss negated after flooring); -inf when not finite."""
    if not math.isfinite(x):
        return -math.inf
    return x if higher_is_better else -max(x, floor)


def versus_parents(
    value: float,
    hand: float,
    learned: float,
    higher_is_better: bool,
    floor: float = 0.0,
    tolerance: float = PARENT_TOLERANCE,
) -> str:
    """Where a mixture's mean metric `value` lands against its two parents' (issue 13):

        beats both          better than the better parent by more than `tolerance`
        matches the better  within `tolerance` of the better parent (relative)
        between             worse than that, but no worse than the worse parent
        below both          worse than the worse parent
        diverged            `value` is not finite where a parent is

    A lower-is-better metric is floored at `floor` first (as in `floored_ratio`), so two
    losses at or under the floor are equal. A parent that is not finite counts as the
    worst possible one."""
    if not math.isfinite(value):
        return "diverged"
    v, a, b = (_worth(x, higher_is_better, floor) for x in (value, hand, learned))
    best, worst = max(a, b), min(a, b)
    margin = tolerance * abs(best) if math.isfinite(best) else 0.0
    if v > best + margin:
        return "beats both"
    if v >= best - margin:
        return "matches the better"
    if v >= worst:
        return "between"
    return "below both"


def parent_margin(
    value: float, hand: float, learned: float, higher_is_better: bool, floor: float = 0.0
) -> float:
    """How far a mixture's mean metric `value` lies beyond its better parent's, relative:

        (w(value) − w(best)) / |w(best)|,   w(x) = x, or −max(x, floor) for a loss,

    > 0 when the mixture is better than both parents (0.05: 5% better), < 0 when worse
    than the better one. -inf when `value` is not finite and a parent is; NaN when
    neither parent is finite or the better one is 0 (no scale to be relative to)."""
    v, a, b = (_worth(x, higher_is_better, floor) for x in (value, hand, learned))
    best = max(a, b)
    if not math.isfinite(best) or best == 0.0:
        return math.nan
    return (v - best) / abs(best)


# what HUB promises (issue 13): the learned optimizer's speed with the hand optimizer's
# stability, over a suite of tasks
GOAL_MATCH = 0.7  # matches the better parent (or beats both) on at least this share
GOAL_BEAT = 0.3  # beats both parents on at least this share


def parent_goals(counts: dict[str, int]) -> list[str]:
    """The goals a mixture misses over a suite, from its counts per `PARENT_CLASSES`
    class (one task each); [] when it meets them all:

        never below the worse parent and never NaN where a parent is finite
        matches the better parent (within 2%) or beats both on ≥ GOAL_MATCH of the tasks
        beats both parents on ≥ GOAL_BEAT of the tasks
    """
    unknown = set(counts) - set(PARENT_CLASSES)
    if unknown:
        raise ValueError(f"unknown classes {sorted(unknown)}; known: {PARENT_CLASSES}")
    n = sum(counts.values())
    if n == 0:
        raise ValueError("no tasks: the goals are judged over at least one task")
    beats, matches = counts.get("beats both", 0), counts.get("matches the better", 0)
    missed = []
    below, diverged = counts.get("below both", 0), counts.get("diverged", 0)
    if below or diverged:
        missed.append(f"below both {below}, diverged {diverged}")
    if beats + matches < GOAL_MATCH * n:
        missed.append(f"matches or beats {beats + matches}/{n} < {GOAL_MATCH:.0%}")
    if beats < GOAL_BEAT * n:
        missed.append(f"beats {beats}/{n} < {GOAL_BEAT:.0%}")
    return missed


def two_standard_errors(a: Sequence[float], b: Sequence[float]) -> float:
    """Two standard errors of the difference of the means of the per-seed values `a` and
    `b`: 2 √(s_a²/n_a + s_b²/n_b), s² the sample variance. A one-seed side borrows the
    other's s² (its own spread is unknown, not 0); NaN when both have one seed (no
    spread known: no gap is beyond it). A gap of two means is beyond the seeds' noise
    when it exceeds this."""
    if not a or not b:
        raise ValueError("both sides need at least one seed")
    if len(a) == 1 and len(b) == 1:
        return math.nan
    var_a = statistics.variance(a) if len(a) > 1 else statistics.variance(b)
    var_b = statistics.variance(b) if len(b) > 1 else var_a
    return 2.0 * math.sqrt(var_a / len(a) + var_b / len(b))
