"""The paper's tasks at one size: the hand preset, the bundled learned optimizer, default HUB.

For every task and seed, three runs through the one runner (`hubopt.bench.runner`):

    preset    the task's own hand-designed optimizer and schedule (`task.hand`)
    learned   hubopt's bundled learned optimizer ("small") alone
    hub       default HUB(preset, small): σ = softmax(|g|) per tensor

then the report (`hubopt.bench.report`) of the records: table.md with the tasks'
test metrics (mean ± std over seeds; r2 > 0 beats predicting the training mean).
Finished runs are kept and skipped when the command is run again (resume).

    python benchmarks/task_baselines.py --out benchmarks/records/tasks_recurrent_cpu \\
        --tasks sine_ltc,sine_lstm,carracing_lstm,carracing_ltc --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import sys
import time

from hubopt.bench import report, runner
from hubopt.tasks import SIZES, get_task

LEARNED = {"name": "pretrained", "size": "small"}


def contenders(task) -> dict[str, dict]:
    """name -> optimizer spec, for `task`."""
    hand = dict(task.hand)
    return {
        "preset": hand,
        "learned": dict(LEARNED),
        "hub": {"name": "hub", "hand": hand, "learned": dict(LEARNED), "mode": "default"},
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder of the records (resumed if present)")
    parser.add_argument("--tasks", required=True, help="comma-separated task names")
    parser.add_argument("--size", choices=SIZES, default="cpu")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", help="comma-separated contenders (default: all)")
    args = parser.parse_args(argv)
    command = " ".join(["python", "benchmarks/task_baselines.py", *(argv or sys.argv[1:])])
    only = set(args.only.split(",")) if args.only else None
    for name in args.tasks.split(","):
        t0 = time.perf_counter()
        task = get_task(name, size=args.size)
        print(f"{name} ({args.size}): built in {time.perf_counter() - t0:.1f}s", flush=True)
        for cname, spec in contenders(task).items():
            if only and cname not in only:
                continue
            for seed in args.seeds:
                runner.train_and_record(
                    task, spec, seed=seed, out_dir=args.out, reuse=True, command=command
                )
    files = report.report([args.out], f"{args.out}/report", report_command=command)
    print(files["table_md"].read_text(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
