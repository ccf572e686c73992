r"""Checkpoint selection on meta-validation tasks: which of a run's θ snapshots to ship.

A meta-training run with `snapshot_every` keeps θ candidates in `thetas/`. Each is
trained with on the selection tasks — held-out tasks (`hubopt.tasks.lopt_heldout`)
whose data is not of the test role — at every horizon of `horizons`, one seed, and
scored by the headline of those tasks, the final loss on the whole training split:

    score(θ) = mean over (task, horizon) of  log( max(L_T, f) / L₀ ),   f = FLOOR · L₀

(L₀ the initial training loss; the floor of `hubopt.bench.scoring`, so a loss of 0
does not win by −∞). With `criterion="train+valid"` the same mean is also taken of the
valid split's loss, log(max(V_T, f_V) / V₀), and the score is the sum of the two: a
θ that memorises the training split at the cost of its held-out loss loses there.
With `inside_hub=True` every candidate runs as HUB's learned member beside the task's
hand preset (`hub:preset+theta(path=…)`, softmax σ), the setting a θ meta-trained with
`--hub` was trained for; the selection file records it, so the two are never mixed.
With `both=True` every candidate runs in both settings, and its score is the mean of its
two scores: the choice for a θ to ship, which users run alone and inside HUB (a θ that
is good inside HUB but spikes alone, or the reverse, is not eligible).
A candidate is eligible when no run diverged and every run's spike ratio
(`scoring.spike_ratio`) is at most `spike_limit`; the eligible candidate with the
lowest score is chosen (ties: the later snapshot). With `seeds` > 1 every (task,
horizon, setting) runs with that many seeds, the score is the mean over all runs, and
what is held to `spike_limit` is each (task, horizon, setting)'s median spike ratio over
its seeds: one seed's spike at the limit can move across it with float rounding alone (a
change of the steps by 1e-8 did, `benchmarks/meta_runs/gen6_few/README.md`). Test data is
never read: the tasks are checked against `task_distribution.DATA_ROLES`.

    hubopt meta-select runs/small        # writes runs/small/selection.json
"""

from __future__ import annotations

import json
import math
import os
import statistics
from pathlib import Path

from hubopt._src.atomic_write import write_atomic
from hubopt.bench import scoring

__all__ = ["selection_tasks", "select_checkpoint"]

HORIZONS = (1000, 5000)
SPIKE_LIMIT = 3.0
CRITERIA = ("train", "train+valid")


def selection_tasks() -> tuple[str, ...]:
    """The held-out tasks whose data is not test data (`lopt_heldout.VALIDATION_NAMES`
    minus those on test-role data)."""
    from hubopt.learned.meta import task_distribution as td
    from hubopt.tasks.lopt_heldout import KINDS, VALIDATION_NAMES

    return tuple(n for n in VALIDATION_NAMES if td.data_role(KINDS[n][0]) != "test")


def _run(
    task_name: str, theta_path: Path, num_steps: int, seed: int, inside_hub: bool = False
) -> dict:
    """One candidate on one task (alone, or as HUB's learned member beside the task's
    hand preset): final training and valid loss, their initial values, spike ratio,
    divergence."""
    from hubopt.bench import optimizers, runner, spec_language
    from hubopt.bench.report import record_spike_ratio
    from hubopt.tasks import get_task

    task = get_task(task_name, "cpu").with_budget(num_steps)
    spec = {"name": "theta", "path": str(theta_path)}
    if inside_hub:
        spec = spec_language.parse(f"hub:preset+theta(path={theta_path})", task).to_dict()
    built = optimizers.build(spec, num_steps)
    out = runner.train(task, built, num_steps=num_steps, seed=seed, progress=False)
    return {
        "task": task_name,
        "num_steps": num_steps,
        "initial_loss": out["eval"]["train"]["loss"][0],
        "final_loss": out["metrics"]["train"]["loss"],
        # the evaluations' loss is the valid split's (the held-out tasks have one)
        "initial_valid_loss": out["eval"]["loss"][0],
        "final_valid_loss": out["final_loss"],
        "spike_ratio": record_spike_ratio(out),
        "diverged": out["first_nonfinite_step"] is not None,
    }


def _score(runs: list[dict], criterion: str = "train") -> float:
    """The mean log floored loss ratio over the runs (see the module docstring)."""
    pairs = [("final_loss", "initial_loss")]
    if criterion == "train+valid":
        pairs.append(("final_valid_loss", "initial_valid_loss"))
    total = 0.0
    for final, initial in pairs:
        logs = []
        for r in runs:
            if r["diverged"] or not math.isfinite(r[final]):
                return math.inf
            start = abs(r[initial])
            logs.append(math.log(scoring.floored_ratio(r[final], start, scoring.FLOOR * start)))
        total += math.fsum(logs) / len(logs)
    return total


def select_checkpoint(
    run_dir: str | os.PathLike,
    *,
    tasks: tuple[str, ...] | None = None,
    horizons: tuple[int, ...] = HORIZONS,
    seed: int = 0,
    spike_limit: float = SPIKE_LIMIT,
    criterion: str = "train",
    inside_hub: bool = False,
    both: bool = False,
    seeds: int = 1,
    log=print,
) -> dict:
    """Scores every `thetas/theta_<step>.msgpack` of `run_dir` (see the module docstring),
    writes `selection.json` there (kept up to date after each candidate, so a stopped
    selection resumes) and returns it; "chosen" names the file picked."""
    from hubopt.learned.meta import task_distribution as td
    from hubopt.tasks.lopt_heldout import KINDS

    run = Path(run_dir)
    candidates = sorted((run / "thetas").glob("theta_*.msgpack"))
    if not candidates:
        raise ValueError(f"{run}/thetas holds no θ snapshots (meta-train with --snapshot-every)")
    if not horizons or min(horizons) < 1:
        raise ValueError(f"horizons must be positive step counts, got {tuple(horizons)}")
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    tasks = selection_tasks() if tasks is None else tuple(tasks)
    for name in tasks:
        if name not in KINDS:
            raise ValueError(f"{name} is not a held-out task of hubopt.tasks.lopt_heldout")
        if td.data_role(KINDS[name][0]) == "test":
            raise ValueError(f"{name} reads test data: checkpoints are not chosen on it")
    path = run / "selection.json"
    settings = {"tasks": list(tasks), "horizons": list(horizons), "seed": seed}
    settings["spike_limit"] = spike_limit
    if seeds < 1:
        raise ValueError(f"seeds must be at least 1, got {seeds}")
    if seeds > 1:  # (one seed, `seed`, before this option existed)
        settings["seeds"] = seeds
    if criterion != "train":  # (selections made before the criterion existed used "train")
        settings["criterion"] = criterion
    if inside_hub and both:
        raise ValueError("inside_hub and both exclude each other (both runs alone and inside HUB)")
    if inside_hub:  # (and alone before this option existed)
        settings["inside_hub"] = True
    if both:
        settings["alone_and_inside_hub"] = True
    hub_settings = (False, True) if both else (inside_hub,)
    run_seeds = range(seed, seed + seeds)
    done = json.loads(path.read_text()) if path.exists() else {}
    if done.get("settings") != settings:
        done = {"settings": settings, "candidates": {}}
    for cand in candidates:
        if cand.name in done["candidates"]:
            continue
        by_setting = {
            hub: [
                _run(t, cand, n, s, hub) | ({"seed": s} if seeds > 1 else {})
                for n in horizons
                for t in tasks
                for s in run_seeds
            ]
            for hub in hub_settings
        }
        runs = [r for rs in by_setting.values() for r in rs]
        scores = {hub: _score(rs, criterion) for hub, rs in by_setting.items()}
        score = sum(scores.values()) / len(scores)
        # each (setting, horizon, task)'s median spike over its seeds (its only one by default)
        worst = max(
            statistics.median(r["spike_ratio"] for r in rs[i : i + seeds])
            for rs in by_setting.values()
            for i in range(0, len(rs), seeds)
        )
        eligible = all(not r["diverged"] for r in runs) and worst <= spike_limit
        done["candidates"][cand.name] = {
            "score": score,
            "worst_spike": worst,
            "eligible": eligible,
            "runs": runs,
        }
        if both:  # each setting's own score, and which runs were inside HUB
            done["candidates"][cand.name]["score_alone"] = scores[False]
            done["candidates"][cand.name]["score_inside_hub"] = scores[True]
            for r in by_setting[True]:
                r["inside_hub"] = True
        log(f"{cand.name}: score {score:.3f}, worst spike {worst:.3g}, eligible {eligible}")
        write_atomic(path, json.dumps(done, indent=1) + "\n")
    scored = done["candidates"]
    pool = [n for n, c in scored.items() if c["eligible"]] or list(scored)
    done["chosen"] = min(pool, key=lambda n: (scored[n]["score"], -int(n[6:12])))
    done["chosen_was_eligible"] = bool(scored[done["chosen"]]["eligible"])
    write_atomic(path, json.dumps(done, indent=1) + "\n")
    return done


# ------------------------------------------------------------------------ CLI


def add_arguments(parser) -> None:
    from hubopt.learned.meta.cli import _tuple_of

    parser.add_argument("run_dir", help="a meta-training run folder with thetas/")
    parser.add_argument("--horizons", type=_tuple_of(int), default=HORIZONS)
    parser.add_argument(
        "--tasks",
        type=_tuple_of(str),
        default=None,
        help="comma-separated held-out tasks (default: every one not on test data)",
    )
    parser.add_argument("--spike-limit", type=float, default=SPIKE_LIMIT)
    parser.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="seeds per task and horizon; the spike limit then holds for the median over them",
    )
    parser.add_argument(
        "--criterion",
        choices=CRITERIA,
        default="train",
        help="score by the final training loss, or by it and the valid split's loss",
    )
    parser.add_argument(
        "--inside-hub",
        action="store_true",
        help="run every candidate as HUB's learned member beside the task's hand preset "
        "(for a θ meta-trained with --hub), not alone",
    )
    parser.add_argument(
        "--alone-and-inside-hub",
        action="store_true",
        help="run every candidate alone and inside HUB; score: the mean of the two, "
        "eligible only when eligible in both (the choice of a θ to ship)",
    )


def run(args) -> int:
    import sys

    try:
        done = select_checkpoint(
            args.run_dir,
            tasks=args.tasks,
            horizons=args.horizons,
            spike_limit=args.spike_limit,
            criterion=args.criterion,
            inside_hub=args.inside_hub,
            both=args.alone_and_inside_hub,
            seeds=args.seeds,
        )
    except ValueError as e:
        print(f"hubopt meta-select: {e}", file=sys.stderr)
        return 2
    chosen = done["chosen"]
    note = "" if done["chosen_was_eligible"] else " (no candidate was eligible: the best score)"
    print(f"chosen: {Path(args.run_dir) / 'thetas' / chosen}{note}")
    return 0
