"""`hubopt meta-train`: meta-train hubopt's learned optimizer (see `train`).

    hubopt meta-train --out runs/small                      # the bundled recipe
    hubopt meta-train --out runs/hub_adam --hub adam        # trained inside HUB(Adam, ·)
    hubopt meta-train --out runs/small                      # again: resumes

Besides train's records, `run_info.json` in the output folder keeps the
commands, git hash, versions, total wall time and a meta-loss summary: what a
provenance file needs.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from hubopt._src.git_state import git_commit


def _tuple_of(cast):
    def parse(s: str):
        try:
            return tuple(cast(x) for x in s.split(",") if x.strip())
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"expected comma-separated values, got {s!r}") from e

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from hubopt.learned.meta.train import ESTIMATORS, MetaTrainConfig

    d = MetaTrainConfig()
    a = parser.add_argument
    a("--out", required=True, help="output folder (config, checkpoints, log); resumed if present")
    a("--estimator", choices=ESTIMATORS, default=d.estimator)
    a(
        "--tasks",
        type=_tuple_of(str),
        default=d.tasks,
        help="comma-separated meta task names (default: task_distribution.TRAIN_TASKS, "
        "whose MNIST task needs pip install 'hubopt[mnist]')",
    )
    a("--outer-steps", type=int, default=d.outer_steps)
    a("--tasks-per-step", type=int, default=d.tasks_per_step)
    a("--num-pairs", type=int, default=d.num_pairs, help="antithetic pairs per task")
    a("--sigma", type=float, default=d.sigma, help="ES perturbation scale")
    a("--meta-lr", type=float, default=d.meta_lr)
    a("--clip-norm", type=float, default=d.clip_norm)
    a("--trunc-len", type=int, default=d.trunc_len)
    a("--horizons", type=_tuple_of(int), default=d.horizons)
    a(
        "--eval-weight",
        type=float,
        default=d.eval_weight,
        help="weight of the held-out log loss after each truncation",
    )
    a(
        "--train-floor",
        type=float,
        default=d.train_floor,
        help="no reward for log training loss below log(first loss) minus this",
    )
    a("--hidden", type=_tuple_of(int), default=d.hidden, help="hidden widths of the MLP")
    a(
        "--relative-correction",
        action=argparse.BooleanOptionalAction,
        default=d.relative_correction,
        help="scale the learned correction by min(1, rms(anchor)) (MLPLOpt)",
    )
    a(
        "--factored-features",
        action=argparse.BooleanOptionalAction,
        default=d.factored_features,
        help="feed the two Adafactor-normalised features (MLPLOpt); without them the "
        "state is 16 bytes per parameter",
    )
    a(
        "--step-decay",
        choices=("none", "cosine"),
        default=d.step_decay,
        help="cosine: the step times ½(1 + cos(π (t−1)/T)) by construction (MLPLOpt)",
    )
    a(
        "--anchor-floor",
        action=argparse.BooleanOptionalAction,
        default=d.anchor_floor,
        help="floor the Adam anchor's normalisation at 1e-2 × the tensor's peak gradient "
        "RMS, so that steps vanish with the gradients after memorising (MLPLOpt)",
    )
    a(
        "--momenta",
        type=int,
        choices=(3, 2, 1),
        default=d.momenta,
        help="momenta fed to the MLP: 3 (β 0.5, 0.9, 0.99), 2 (0.9, 0.99) or 1 (0.9); fewer "
        "is a cheaper step and less state (MLPLOpt)",
    )
    a(
        "--hub",
        default=None,
        metavar="HAND",
        help="meta-train inside hubopt.hub(HAND, learned); HAND a constant-rate preset (adam)",
    )
    a("--hub-mode", choices=("default", "inverted"), default=d.hub_mode)
    a("--seed", type=int, default=d.seed)
    a("--checkpoint-every", type=int, default=d.checkpoint_every)
    a(
        "--snapshot-every",
        type=int,
        default=d.snapshot_every,
        help="also keep θ every this many outer steps in thetas/ (for checkpoint "
        "selection on meta-validation tasks); 0: none",
    )
    a("--no-resume", action="store_true", help="refuse to continue an existing run")
    a(
        "--time-limit-min",
        type=float,
        default=None,
        help="stop (with a checkpoint) after this many minutes; rerun to continue",
    )
    a("--executor", choices=("local", "ray"), default="local")
    a("--ray-workers", type=int, default=2)
    a("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import jax

    from hubopt.learned.meta.train import MetaTrainConfig, meta_train

    try:
        config = MetaTrainConfig(
            tasks=args.tasks,
            estimator=args.estimator,
            outer_steps=args.outer_steps,
            tasks_per_step=args.tasks_per_step,
            num_pairs=args.num_pairs,
            sigma=args.sigma,
            meta_lr=args.meta_lr,
            clip_norm=args.clip_norm,
            trunc_len=args.trunc_len,
            horizons=args.horizons,
            eval_weight=args.eval_weight,
            train_floor=args.train_floor,
            hidden=args.hidden,
            relative_correction=args.relative_correction,
            factored_features=args.factored_features,
            step_decay=args.step_decay,
            anchor_floor=args.anchor_floor,
            momenta=args.momenta,
            hub=args.hub,
            hub_mode=args.hub_mode,
            seed=args.seed,
            checkpoint_every=args.checkpoint_every,
            snapshot_every=args.snapshot_every,
        )
    except ValueError as e:
        print(f"hubopt meta-train: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    if args.no_resume and (out / "checkpoint.msgpack").exists():
        print(f"hubopt meta-train: {out} already holds a run (--no-resume)", file=sys.stderr)
        return 2
    executor = None
    if args.executor == "ray":
        from hubopt.learned.meta.ray_executor import RayExecutor

        executor = RayExecutor(config, num_workers=args.ray_workers)
    limit = None if args.time_limit_min is None else 60.0 * args.time_limit_min
    git_hash = git_commit()  # the code this session runs (HEAD may move while it runs)
    t0 = time.time()
    try:
        result = meta_train(
            config, out, resume=True, executor=executor, progress=not args.quiet, time_limit_s=limit
        )
    except ValueError as e:
        print(f"hubopt meta-train: {e}", file=sys.stderr)
        return 2
    wall = time.time() - t0

    info_path = out / "run_info.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {"sessions": []}
    info["sessions"].append(
        {
            "command": getattr(args, "command_line", None) or shlex.join(["hubopt", *sys.argv[1:]]),
            "git_hash": git_hash,
            "wall_s": round(wall, 1),
            "reached_step": result.step,
        }
    )
    losses = [float(np.mean(r["meta_loss"])) for r in result.log]
    n = max(1, len(losses) // 10)
    info.update(
        {
            "seed": config.seed,
            "outer_steps_done": result.step,
            "total_wall_s": round(sum(s["wall_s"] for s in info["sessions"]), 1),
            "versions": {"python": platform.python_version(), "jax": jax.__version__},
            "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
            "meta_loss_first_10pct": float(np.mean(losses[:n])) if losses else None,
            "meta_loss_last_10pct": float(np.mean(losses[-n:])) if losses else None,
            "meta_loss_by_decile": [
                float(np.mean(losses[i : i + n])) for i in range(0, len(losses), n)
            ][:10],
            "diverged_fraction": float(np.mean([np.mean(r["diverged"]) for r in result.log]))
            if result.log
            else None,
        }
    )
    from hubopt._src.atomic_write import write_atomic

    write_atomic(info_path, json.dumps(info, indent=1) + "\n")
    print(
        f"meta-train: {result.step}/{config.outer_steps} outer steps in {wall:.0f}s; "
        f"theta in {out / 'theta.msgpack'}"
    )
    return 0
