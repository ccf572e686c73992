"""Sweeps: a grid of runs (tasks × optimizer specs × seeds) that survives crashes (`hubopt sweep`).

A sweep is a list of `Point`s, each one run of the one runner
(`hubopt.bench.runner.train_and_record`) writing one record. Presets name the
grids (`PRESETS`); executors run them:

    local     one after another, in this process
    process   in N worker processes (spawned, so each has its own JAX)
    ray       as Ray tasks (`pip install 'hubopt[ray]'`): on a local Ray started for
              the sweep, or on a running cluster with `--ray-address ADDR` (its
              workers need hubopt installed, and the records folder must be one
              they all see, e.g. a shared file system)

Crash safety comes from the records: each is written atomically when its run
ends, so a sweep killed at any moment (SIGKILL included) loses only the runs in
flight, and running the same command again keeps every finished record (a
record of the same task, optimizer, seed and steps is reused, not retrained)
and redoes the rest. A record that cannot be read (damaged by hand, say) is
moved aside to `<name>.damaged` and its run redone; nothing is deleted.

    hubopt sweep smoke --out runs/smoke              # tiny size of every task
    hubopt sweep smoke --executor process --workers 2
    hubopt sweep smoke --executor ray [--ray-address ray://head:10001]
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["PRESETS", "Point", "preset_points", "run_point", "run_sweep"]

EXECUTORS = ("local", "process", "ray")


@dataclass(frozen=True)
class Point:
    """One run of a sweep: `opt` is an optimizer spec text (`hubopt.bench.spec_language`)."""

    task: str
    opt: str
    seed: int
    size: str = "cpu"
    steps: int | None = None

    def __str__(self) -> str:
        steps = "" if self.steps is None else f", {self.steps} steps"
        return f"{self.task}[{self.size}] {self.opt} seed {self.seed}{steps}"


# ------------------------------------------------------------------------------ presets

SMOKE_OPTIMIZERS = ("adam", "small", "hub:adam+small")


def _smoke(size: str | None, seeds: int | None) -> list[Point]:
    """The tiny size of every registered task × {adam, small, hub:adam+small}, one seed."""
    from hubopt.tasks import task_names

    return [
        Point(task, opt, seed, size or "tiny")
        for task in task_names()
        for opt in SMOKE_OPTIMIZERS
        for seed in range(seeds or 1)
    ]


# name -> (size, number of seeds) -> points; None means the preset's own default
PRESETS: dict[str, Callable[[str | None, int | None], list[Point]]] = {"smoke": _smoke}


def preset_points(name: str, size: str | None = None, seeds: int | None = None) -> list[Point]:
    """The grid of preset `name`; `size` and `seeds` (a count: seeds 0 … seeds − 1) override
    the preset's own."""
    if name not in PRESETS:
        raise ValueError(f"unknown sweep preset {name!r}; presets: {', '.join(PRESETS)}")
    if seeds is not None and (isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1):
        raise ValueError(f"seeds must be a positive number of seeds, got {seeds!r}")
    return PRESETS[name](size, seeds)


# ------------------------------------------------------------------------------ one run

_TASKS: dict[tuple[str, str], object] = {}  # built tasks, per process


def _task(name: str, size: str):
    from hubopt.tasks import get_task

    key = (name, size)
    if key not in _TASKS:
        _TASKS[key] = get_task(name, size=size)
    return _TASKS[key]


def run_point(point: Point | dict, out_dir: str, command: str | None = None) -> str:
    """Runs `point` (or reuses its finished record) and returns the record's path."""
    from hubopt.bench import optimizers, records, runner, spec_language

    point = Point(**point) if isinstance(point, dict) else point
    task = _task(point.task, point.size)
    spec = spec_language.parse(point.opt, task).to_dict()

    def train(**kwargs):
        return runner.train_and_record(
            task,
            spec,
            num_steps=point.steps,
            seed=point.seed,
            out_dir=out_dir,
            reuse=True,
            command=command,
            log=lambda *_: None,
            **kwargs,
        )

    path = runner.record_path(out_dir, task.name, optimizers.label(spec), point.seed)
    if path.exists():
        try:
            records.read(path)
        except records.RecordError:  # an unreadable record: keep it aside, redo the run
            aside = path.with_name(path.name + ".damaged")
            os.replace(path, aside)
            print(
                f"hubopt sweep: {path} is unreadable; moved to {aside}, rerunning", file=sys.stderr
            )
    return str(train())


def _process_worker(args):
    point, out_dir, command = args
    return run_point(point, out_dir, command)


def _ray_map(points, out_dir, command, workers, address):
    """The record paths of `points` run as Ray tasks, in order (yielded as each is ready)."""
    try:
        import ray
    except ImportError:
        raise ImportError(
            "the ray executor needs Ray: pip install 'hubopt[ray]' (or pip install ray)"
        ) from None
    started = not ray.is_initialized()
    if started:
        if address is None:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    try:
        remote = ray.remote(num_cpus=1)(_process_worker)
        out = str(Path(out_dir).resolve())
        refs = [remote.remote((asdict(p), out, command)) for p in points]
        for ref in refs:
            yield ray.get(ref)
    finally:
        if started:
            ray.shutdown()


def run_sweep(
    points: Iterable[Point],
    out_dir: str,
    *,
    executor: str = "local",
    workers: int = 2,
    ray_address: str | None = None,
    command: str | None = None,
    progress: bool | None = None,
) -> list[str]:
    """Runs every point (finished records are reused) and returns the record paths in order.

    `workers` is the number of processes of the "process" executor (and of the CPUs
    of a local Ray started for the sweep); `ray_address` the cluster of "ray".
    """
    from tqdm import tqdm

    points = list(points)
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; executors: {', '.join(EXECUTORS)}")
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    if progress is None:
        progress = sys.stderr.isatty() and not os.environ.get("CI")
    bar = tqdm(total=len(points), desc="sweep", unit="run", disable=not progress)
    paths: list[str] = []
    try:
        if executor == "local":
            for point in points:
                bar.set_postfix_str(str(point), refresh=False)
                paths.append(run_point(point, out_dir, command))
                bar.update()
        elif executor == "ray":
            for path in _ray_map(points, out_dir, command, workers, ray_address):
                paths.append(path)
                bar.update()
        else:
            import concurrent.futures as futures
            import multiprocessing

            context = multiprocessing.get_context("spawn")  # no forked JAX runtimes
            with futures.ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
                jobs = [(asdict(p), out_dir, command) for p in points]
                for path in pool.map(_process_worker, jobs):
                    paths.append(path)
                    bar.update()
    finally:
        bar.close()
    return paths


# ------------------------------------------------------------------------------ CLI


def add_arguments(parser) -> None:
    from hubopt.tasks import SIZES

    parser.add_argument("preset", help=f"one of: {', '.join(PRESETS)}")
    parser.add_argument("--seeds", type=int, help="number of seeds (0 … N−1; default: preset's)")
    parser.add_argument("--size", choices=SIZES, help="task size (default: the preset's)")
    parser.add_argument("--executor", choices=EXECUTORS, default="local")
    parser.add_argument(
        "--workers", type=int, default=2, help="processes (process), CPUs of a local Ray (ray)"
    )
    parser.add_argument("--ray-address", help="a running Ray cluster (default: a local Ray)")
    parser.add_argument("--out", default=None, help="records folder (default: runs/<preset>)")


def run(args) -> int:
    """`hubopt sweep`: every point of the preset, resuming from the records in --out."""
    try:
        points = preset_points(args.preset, args.size, args.seeds)
    except ValueError as e:
        print(f"hubopt sweep: error: {e}", file=sys.stderr)
        return 2
    if args.workers < 1:
        print(f"hubopt sweep: error: --workers must be >= 1, got {args.workers}", file=sys.stderr)
        return 2
    out = args.out or f"runs/{args.preset}"
    start = time.perf_counter()
    paths = run_sweep(
        points,
        out,
        executor=args.executor,
        workers=args.workers,
        ray_address=args.ray_address,
        command=getattr(args, "command_line", None),
    )
    print(
        f"hubopt sweep {args.preset}: {len(paths)} records in {out} "
        f"({time.perf_counter() - start:.0f} s)"
    )
    return 0
