"""`hubopt demo`: the paper's non-convex function (§3.2, eq. 6) under four optimizers.

Runs Adam, Adamax, LGL2O(hand | learned) and HUB(hand | learned) — plus the
learned optimizer alone when there is one — on `nonconvex_l1cos` (d = 1000,
λ = 0.01) for 10,000 steps (the paper's setting) and several seeds, writes one
record per run under `<out>/records/`, then builds `<out>/table.md`,
`<out>/table.csv` and `<out>/loss_curves.png` from those records on disk.

Learning rates: the customary defaults of `hubopt.baselines.PRESETS`, not
tuned for this function: Adam 1e-3, Adamax 2e-3 (Kingma & Ba's defaults).

The learned slot: VeLO if its checkpoint is cached, else hubopt's bundled
learned optimizer if present. When neither is available, the demo says so in
a warning and, by default, fills the learned slot with the *other*
hand-designed optimizer, labelled "stand-in ..." in the table, the legend
and the records (`"is_learned": false`); `--without-learned skip` leaves HUB
and LGL2O out instead. A hand-designed optimizer is never presented as a
learned one.

Re-running into the same folder reuses records of identical runs (same task,
optimizer spec, seed and steps); a record of a different run at the same
path is an error unless `--overwrite`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hubopt.bench import optimizers, records, report, runner

TASK = "nonconvex_l1cos"
DEFAULT_STEPS = 10_000
DEFAULT_SEEDS = (0, 1, 2)


def hand_spec(name: str) -> dict:
    """The demo's setting of a hand optimizer: `PRESETS[name]`'s learning rate."""
    from hubopt.baselines import PRESETS

    return {"name": name, "learning_rate": float(PRESETS[name]["learning_rate"])}


def specs(hand: str, learned: dict | None, without_learned: str = "stand-in") -> list[dict]:
    """The optimizers the demo runs, given the learned spec (None: none available)."""
    out = [hand_spec("adam"), hand_spec("adamax")]
    if learned is None:
        if without_learned == "skip":
            return out
        other = "adamax" if hand != "adamax" else "adam"
        learned = {"name": "stand-in", "optimizer": hand_spec(other)}
    else:
        out.append(dict(learned))
    out.append({"name": "lgl2o", "hand": hand_spec(hand), "learned": dict(learned)})
    out.append(
        {
            "name": "hub",
            "hand": hand_spec(hand),
            "learned": dict(learned),
            "mode": "default",
            "clip": None,
        }
    )
    return out


def hub_diagnostics(paths) -> list[str]:
    """One line per HUB record on disk: σ at the last step and the hand share of the update."""
    lines = []
    for path in paths:
        rec = records.read(path)
        stats = rec["diagnostics"].get("hub")
        if not stats:
            continue
        for leaf, st in stats.items():
            lines.append(
                f"HUB diagnostics, {rec['optimizer']['label']} seed {rec['seed']}, tensor "
                f"{leaf!r} at the last step: σ min/mean/max = {st['sigma_min']:.3g}/"
                f"{st['sigma_mean']:.3g}/{st['sigma_max']:.3g}, hand share of the update = "
                f"{st['hand_share']:.3g}"
            )
    return lines


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    parser.add_argument(
        "--steps",
        type=runner._cli_positive_int,
        default=DEFAULT_STEPS,
        help=f"steps per run (default: {DEFAULT_STEPS}, the paper's setting)",
    )
    parser.add_argument(
        "--seeds",
        type=runner._cli_seed,
        nargs="+",
        default=list(DEFAULT_SEEDS),
        help="seeds (default: 0 1 2)",
    )
    parser.add_argument(
        "--hand",
        choices=("adam", "adamax"),
        default="adam",
        help="hand member of HUB and LGL2O (default: adam)",
    )
    parser.add_argument(
        "--learned",
        choices=("auto", "velo", "pretrained", "none"),
        default="auto",
        help="learned member: auto = VeLO if cached, else hubopt's bundled "
        "optimizer, else none (default: auto)",
    )
    parser.add_argument(
        "--without-learned",
        choices=("stand-in", "skip"),
        default="stand-in",
        help="when no learned optimizer is available: run HUB/LGL2O with a "
        "clearly labelled hand-designed stand-in, or skip them",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="rerun and replace existing records in --out"
    )


def run(args) -> int:
    out = Path(args.out)
    choice = optimizers.resolve_learned(args.learned)
    print(f"hubopt demo: {TASK}, {args.steps} steps, seeds {' '.join(map(str, args.seeds))}")
    if choice.available:
        print(f"Learned optimizer used: {choice.reason}")
    else:
        print(f"WARNING: {choice.reason}.")
        if args.without_learned == "skip":
            print("WARNING: HUB and LGL2O are skipped (--without-learned skip).")
        else:
            other = "adamax" if args.hand != "adamax" else "adam"
            print(
                f"WARNING: HUB and LGL2O run with {other} as a STAND-IN in the learned slot: "
                "a hand-designed optimizer, NOT a learned one. Their results say nothing "
                "about learned optimizers."
            )
        print(f"To get a learned optimizer: {optimizers.HOW_TO_GET_LEARNED}.")
    command = getattr(args, "command_line", None)
    paths = []
    try:
        for spec in specs(args.hand, choice.spec, args.without_learned):
            for seed in args.seeds:
                paths.append(
                    runner.train_and_record(
                        TASK,
                        spec,
                        num_steps=args.steps,
                        seed=seed,
                        out_dir=out / "records",
                        overwrite=args.overwrite,
                        reuse=True,
                        command=command,
                    )
                )
        files = report.report(paths, out, report_command=command or "hubopt demo")
    except (FileExistsError, records.RecordError, ValueError) as e:
        print(f"hubopt demo: error: {e}", file=sys.stderr)
        return 1
    print()
    print(files["table_md"].read_text(), end="")
    print()
    for f in files.values():
        print(f"wrote {f}")
    for line in hub_diagnostics(paths):
        print(line)
    if choice.available:
        print(f"Learned optimizer used: {choice.reason}")
    else:
        print(
            "No learned optimizer was used (none available); rows marked 'NOT learned' "
            "used a hand-designed stand-in."
        )
    return 0
