"""Tunes a task's hand-designed optimizer: its declared learning-rate grid, chosen on valid.

For each task, every rate of `task.lr_grid` (with the task's optimizer and
schedule, `task.hand`) is trained for each seed through the one runner, then
`hubopt.bench.tuning.select_learning_rate` picks the rate with the best mean
valid metric. The choice and every rate's valid numbers are written to
`<out>/selection__<task>.json`; the report of this command's runs to `<out>/report/`.
Finished runs are kept and skipped when the command is run again (resume).

    python benchmarks/tune_hand.py --out benchmarks/records/tune_lane_keeping_cpu \\
        --tasks carracing_lstm,carracing_ltc --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import sys

from hubopt._src.atomic_write import write_atomic
from hubopt.bench import records, report, runner, tuning
from hubopt.tasks import SIZES, get_task


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder of the records (resumed if present)")
    parser.add_argument("--tasks", required=True, help="comma-separated task names")
    parser.add_argument("--size", choices=SIZES, default="cpu")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args(argv)
    command = " ".join(["python", "benchmarks/tune_hand.py", *(argv or sys.argv[1:])])
    all_paths = []
    for name in args.tasks.split(","):
        task = get_task(name, size=args.size)
        specs = tuning.grid_specs(task.hand, task.lr_grid)
        print(f"{name} ({args.size}): learning rates {list(task.lr_grid)}", flush=True)
        paths = [
            runner.train_and_record(task, spec, seed=seed, out_dir=args.out, reuse=True,
                                    command=command)
            for spec in specs
            for seed in args.seeds
        ]  # fmt: skip
        all_paths += paths
        selection = tuning.select_learning_rate(
            [records.read(p) for p in paths],
            task.lr_grid,
            metric=task.metric,
            higher_is_better=task.higher_is_better,
            seeds=args.seeds,
        )
        selection = {"task": name, "size": args.size, "hand": dict(task.hand), **selection}
        selection["command"] = command
        path = f"{args.out}/selection__{name}.json"
        write_atomic(path, json.dumps(selection, indent=1, sort_keys=True) + "\n")
        for row in selection["grid"]:
            mark = "  <- chosen" if row["learning_rate"] == selection["learning_rate"] else ""
            print(
                f"  lr {row['learning_rate']:g}: valid {task.metric} {row['mean']:.4g} "
                f"± {row['std']:.2g}{mark}"
            )
    files = report.report(all_paths, f"{args.out}/report", report_command=command)
    print(files["table_md"].read_text(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
