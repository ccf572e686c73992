"""`hubopt demo` (`make demo`): the harness's `demo` preset, then its report.

Three tasks (`hubopt.bench.sweep.DEMO_TASKS`) × the hand preset, the learned
optimizer alone, LGL2O, default HUB and clipped HUB × 2 seeds:

    nonconvex_l1cos   the paper's non-convex function (§3.2, eq. 6; d = 1000), 10,000
                      steps: far outside the learned optimizer's distribution
    sine_lstm         an LSTM fitting sine trajectories (recurrent), 300 steps
    fmnist_mlp        an MLP on Fashion-MNIST (a 784 × 128 tensor: σ = softmax(|g|)
                      gives its hand optimizer ~1/10⁵), 600 steps

About 5 minutes on 2 cores. One record per run goes to `<out>/records/`
(finished runs are reused when the command is run again; killed, it loses only
the run in flight); then `<out>/index.html` (tables and figures, one page),
`<out>/table.md`, `<out>/table.csv` and the PNG figures, made from those
records on disk. The terminal gets the results table and the HTML path.

The learned slot: VeLO if its checkpoint is cached, else hubopt's bundled
learned optimizer. When neither is available, the demo says so in a warning
and, by default, fills the learned slot with a hand-designed stand-in
(Adamax), labelled "stand-in" in the table, the legend and the records
(`"is_learned": false`); `--without-learned skip` leaves those contenders out
instead. A hand-designed optimizer is never presented as a learned one.
"""

from __future__ import annotations

import statistics
import sys
from dataclasses import replace
from pathlib import Path

from hubopt.bench import optimizers, records, report, runner, spec_language, sweep

DEFAULT_SEEDS = 2
STAND_IN_TEXT = "stand-in(opt=adamax)"


def learned_text(spec: dict | None, without_learned: str = "stand-in") -> str | None:
    """The spec text of the demo's learned slot, from `optimizers.resolve_learned`'s spec."""
    if spec is None:
        return None if without_learned == "skip" else STAND_IN_TEXT
    return spec_language.describe(spec)


def hub_diagnostics(recs: list[dict]) -> list[str]:
    """One line per HUB record: σ and the hand share of the update at the last step."""
    lines = []
    for rec in recs:
        stats = rec["diagnostics"].get("hub")
        if not stats:
            continue
        where = f"{rec['task']['name']}, {rec['optimizer']['label']}, seed {rec['seed']}"
        if len(stats) == 1:
            ((leaf, st),) = stats.items()
            lines.append(
                f"HUB at the last step, {where}: tensor {leaf!r} σ min/mean/max = "
                f"{st['sigma_min']:.3g}/{st['sigma_mean']:.3g}/{st['sigma_max']:.3g}, "
                f"hand share of the update = {st['hand_share']:.3g}"
            )
        else:
            shares = [st["hand_share"] for st in stats.values()]
            lines.append(
                f"HUB at the last step, {where}: hand share of the update over its "
                f"{len(shares)} tensors min/median/max = {min(shares):.3g}/"
                f"{statistics.median(shares):.3g}/{max(shares):.3g}"
            )
    return lines


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    parser.add_argument(
        "--seeds",
        type=runner._cli_positive_int,
        default=DEFAULT_SEEDS,
        help=f"number of seeds, 0 … N−1 (default: {DEFAULT_SEEDS})",
    )
    parser.add_argument(
        "--steps",
        type=runner._cli_positive_int,
        help="steps of every run (default: each task's demo budget; for a quick look)",
    )
    parser.add_argument(
        "--learned",
        choices=("auto", "velo", "small", "none"),
        default="auto",
        help="learned member: auto = VeLO if cached, else hubopt's bundled small "
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
    from hubopt._src.compile_cache import add_no_compile_cache_argument

    add_no_compile_cache_argument(parser)


def run(args) -> int:
    out = Path(args.out)
    choice = optimizers.resolve_learned(args.learned)
    learned = learned_text(choice.spec, args.without_learned)
    points = sweep.demo_points(args.seeds, learned)
    if args.steps is not None:
        points = [replace(p, steps=args.steps) for p in points]
    tasks = ", ".join(dict.fromkeys(p.task for p in points))
    print(f"hubopt demo: {len(points)} runs ({tasks}; seeds 0-{args.seeds - 1})")
    if choice.available:
        print(f"Learned optimizer used: {choice.reason}")
    else:
        print(f"WARNING: {choice.reason}.")
        if learned is None:
            print("WARNING: HUB and LGL2O are skipped (--without-learned skip).")
        else:
            print(
                "WARNING: HUB and LGL2O run with adamax as a STAND-IN in the learned slot: "
                "a hand-designed optimizer, NOT a learned one. Their results say nothing "
                "about learned optimizers."
            )
        print(f"To get a learned optimizer: {optimizers.HOW_TO_GET_LEARNED}.")
    command = getattr(args, "command_line", None) or "hubopt demo"
    try:
        paths = sweep.run_sweep(
            points,
            str(out / "records"),
            command=command,
            overwrite=args.overwrite,
            compile_cache=not args.no_compile_cache,
        )
        files = report.report(paths, out, report_command=command, formats=("md", "csv", "html"))
    except (FileExistsError, records.RecordError, ValueError) as e:
        print(f"hubopt demo: error: {e}", file=sys.stderr)
        return 1
    print()
    print("Test metrics of the final params (best per task in bold):")
    recs = records.read_all(paths)
    print(report.results_table(recs, "md"), end="")
    print()
    for line in hub_diagnostics(recs):
        print(line)
    if choice.available:
        print(f"Learned optimizer used: {choice.reason}")
    else:
        print(
            "No learned optimizer was used (none available); rows marked 'NOT learned' "
            "used a hand-designed stand-in."
        )
    print(f"Tables: {files['table_md']}")
    print(f"Report (open in a browser): {files['html'].resolve()}")
    return 0
