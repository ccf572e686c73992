"""Sweeps: a grid of runs (tasks × optimizer specs × seeds) that survives crashes (`hubopt sweep`).

A sweep is a list of `Point`s, each one run of the one runner
(`hubopt.bench.runner.train_and_record`) writing one record. Presets name the
grids (`PRESETS`); executors run them:

    local     one after another, in this process
    process   in N worker processes (spawned, so each has its own JAX)
    ray       as Ray tasks (`pip install 'hubopt[ray]'`): on a local Ray started for
              the sweep, or on a running cluster with `--ray-address ADDR` (its
              workers need hubopt installed, and the records folder must be one
              they all see, e.g. a shared file system); `--gpus-per-run N`: each run
              holds N GPUs of one node

`--learned velo` runs a preset's grid with VeLO (`hubopt velo download` first; on a Ray
cluster every worker needs it cached) in every learned slot: the learned optimizer
alone and every combination's learned member, nothing else changed; the hand-designed
contenders are the same runs, so into the same folder they reuse their records.

Crash safety comes from the records: each is written atomically when its run
ends, so a sweep killed at any moment (SIGKILL included) loses only the runs in
flight, and running the same command again keeps every finished record (a
record of the same task, optimizer, seed, steps and evaluation steps is reused,
not retrained)
and redoes the rest. Grids run seed by seed (`seed_major`), so a sweep stopped
part-way has every contender at its first seeds. A record that cannot be read
(damaged by hand, say) is moved aside to `<name>.damaged` and its run redone;
nothing is deleted.

    hubopt sweep smoke --out runs/smoke              # tiny size of every task (2 evaluations)
    hubopt sweep table2 --seeds 3 --out runs/table2  # the paper's Table 2 at "cpu" size
    hubopt sweep table2 --learned velo --out runs/table2  # ... with VeLO in every learned slot
    hubopt sweep sigma --out runs/sigma              # the σ study: every rule, both modes
    hubopt sweep sigma_scale --out runs/sigma        # ... and the loss × 10⁻³, 1, 10³ sweep
    hubopt sweep sigma --tasks sine_lstm,sine_ltc    # a preset's grid on some of its tasks
    hubopt sweep lopt --out runs/lopt                # the learned optimizer's quality
    hubopt sweep lopt_test --steps 5000 --out runs/lopt_test_5000   # ... on its test set
    hubopt sweep smoke --executor process --workers 2
    hubopt sweep --tasks fmnist_resnet,mnist_vit --opt tuned --opt small \\
        --opt hub:preset+small --seeds 3 --out runs/mine      # a grid of one's own
    hubopt sweep smoke --executor ray [--ray-address ray://head:10001]
    hubopt sweep table5 --size paper --executor ray --gpus-per-run 1   # a GPU per run
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

__all__ = [
    "PRESETS",
    "Point",
    "check_executor_options",
    "grid_points",
    "point_spec",
    "preset_points",
    "run_point",
    "run_sweep",
    "seed_major",
    "with_learned",
]

EXECUTORS = ("local", "process", "ray")


@dataclass(frozen=True)
class Point:
    """One run of a sweep: `opt` is an optimizer spec text (`hubopt.bench.spec_language`)."""

    task: str
    opt: str
    seed: int
    size: str = "cpu"
    steps: int | None = None
    loss_scale: float | None = None  # the training loss × this (`Task.with_loss_scale`)
    # untimed evaluations after step 0 (None: the runner's `DEFAULT_EVALS`); fewer change
    # only the record's evaluation curve, never the training
    evals: int | None = None
    # a learned spec text (velo, small, theta,path=FILE) put in `opt`'s learned slot
    # (`with_learned`); None: `opt` as it is
    learned: str | None = None

    def __str__(self) -> str:
        steps = "" if self.steps is None else f", {self.steps} steps"
        scale = "" if self.loss_scale is None else f", loss × {self.loss_scale:g}"
        evals = "" if self.evals is None else f", {self.evals} evals"
        slot = "" if self.learned is None else f" [learned: {self.learned}]"
        return f"{self.task}[{self.size}] {self.opt}{slot} seed {self.seed}{steps}{scale}{evals}"


# ------------------------------------------------------------------------------ presets

SMOKE_OPTIMIZERS = ("adam", "small", "hub:adam+small")
SMOKE_EVALS = 2  # a smoke run is evaluated at its middle and its end (and at step 0)


def _smoke(size: str | None, seeds: int | None) -> list[Point]:
    """The tiny size of every registered task × {adam, small, hub:adam+small}, one seed,
    each evaluated `SMOKE_EVALS` times (a smoke run checks that things run, not curves)."""
    from hubopt.tasks import task_names

    return [
        Point(task, opt, seed, size or "tiny", evals=SMOKE_EVALS)
        for task in task_names()
        for opt in SMOKE_OPTIMIZERS
        for seed in range(seeds or 1)
    ]


# The paper's experiments. Contenders: the task's hand preset and its declared learning-rate
# grid (same optimizer and schedule: the tuned baseline, chosen on valid by
# `hubopt.bench.tuning`), the bundled learned optimizer alone, LGL2O and HUB as the paper
# runs them; the σ study adds its rules (issue 13). VeLO rows: `--learned velo` (`with_learned`)
# after `hubopt velo download`.
# clipping HUB's [B, A] in hubopt's examples (the paper's values are not here): B must be well
# above 1/n to matter (on nonconvex_l1cos σ ≡ 1/d = 0.001, so B = 0.001 would change nothing)
CLIP = "0.1:0.9"
PAPER_CONTENDERS = ("small", "lgl2o:preset+small", "hub:preset+small")
TABLES = {
    # name: (tasks, extra contenders, default seeds)
    "figure2": (("nonconvex_l1cos",), (f"hub:preset+small,clip={CLIP}",), 5),
    "table1": (
        ("fmnist_mobilenet_finetune",),
        ("hub:preset+small,mode=inverted", "hub:preset+small,blocks=finetune"),
        3,
    ),
    # ≥ 5 seeds where a run is cheap (under about two minutes on one core), 3 otherwise
    "table2": (("sine_ltc", "sine_lstm", "carracing_ltc"), (), 5),
    "table3": (("carracing_lstm",), (), 5),
    "table4": (("volume_siren",), (), 5),
    "table5": (("fmnist_resnet", "fmnist_vit", "mnist_resnet", "mnist_vit"), ("adamw",), 3),
}
ABLATION_TASKS = ("nonconvex_l1cos", "sine_lstm", "volume_siren")
ABLATION_CONTENDERS = (
    "blend:preset+small,lam=0.25",
    "blend:preset+small,lam=0.5",
    "blend:preset+small,lam=0.75",
    "hub:preset+small",
    "hub:preset+small,mode=inverted",
    f"hub:preset+small,clip={CLIP}",
    "lgl2o:preset+small",
)


TUNED = "tuned"  # in a grid: the preset at every rate of the task's lr_grid


def _tuned_grid(task) -> list[str]:
    """The preset, and the preset at every other rate of the task's `lr_grid`."""
    rates = [r for r in task.lr_grid if r != task.hand.get("learning_rate")]
    return ["preset", *(f"preset,lr={r:g}" for r in rates)]


def recommended_contender() -> str | None:
    """HUB at hubopt's recommended σ rule in its mode (`hubopt.RECOMMENDED_SIGMA`,
    `RECOMMENDED_MODE`) as a contender of the paper's tables; None while there is none."""
    import hubopt

    rule = getattr(hubopt, "RECOMMENDED_SIGMA", None)
    if rule is None:
        return None
    mode = getattr(hubopt, "RECOMMENDED_MODE", "default")
    return f"hub:preset+small,sigma={rule}" + ("" if mode == "default" else f",mode={mode}")


def _with_recommended(opts) -> tuple[str, ...]:
    """`opts`, and HUB at the recommended σ rule after them once there is one (read at
    run time: it follows the records)."""
    recommended = recommended_contender()
    return (*opts, *([recommended] if recommended else []))


def ablation_contenders() -> tuple[str, ...]:
    """`ABLATION_CONTENDERS`, and HUB at the recommended σ rule once there is one."""
    return _with_recommended(ABLATION_CONTENDERS)


def _table(name: str):
    tasks, extra, default_seeds = TABLES[name]

    def points(size: str | None, seeds: int | None) -> list[Point]:
        size = size or "cpu"
        mixtures = _with_recommended((*PAPER_CONTENDERS, *extra))
        out = []
        for task_name in tasks:
            task = _task(task_name, size)
            opts = [*_tuned_grid(task), *mixtures]
            out += [
                Point(task_name, o, s, size) for o in opts for s in range(seeds or default_seeds)
            ]
        return out

    points.__doc__ = f"{name}: {', '.join(tasks)} × the paper's contenders"
    return points


def _ablations(size: str | None, seeds: int | None) -> list[Point]:
    """Fixed blends, every HUB mode and LGL2O against the preset and the learned optimizer."""
    size = size or "cpu"
    opts = ("preset", "small", *ablation_contenders())
    return [Point(t, o, s, size) for t in ABLATION_TASKS for o in opts for s in range(seeds or 3)]


# The σ study (issue 13): every paper task × every σ rule in both modes, against the tuned
# preset, the learned optimizer alone, LGL2O, fixed blends and clipped softmax HUB; and a
# loss-scale sweep on two tasks (a scale-free rule gives the same metrics at every scale).
SIGMA_TASKS = (
    "nonconvex_l1cos",
    "sine_ltc",
    "sine_lstm",
    "carracing_ltc",
    "carracing_lstm",
    "volume_siren",
    "fmnist_resnet",
    "fmnist_vit",
    "mnist_resnet",
    "mnist_vit",
    "fmnist_mobilenet_finetune",
)


def _sigma_rule_contenders(modes=("default", "inverted")) -> list[str]:
    from hubopt import SIGMA_RULES

    return [
        f"hub:preset+small,sigma={rule}" + ("" if mode == "default" else f",mode={mode}")
        for rule in SIGMA_RULES
        for mode in modes
    ]


def _sigma(size: str | None, seeds: int | None) -> list[Point]:
    """The σ study: `SIGMA_TASKS` × the baselines × every σ rule in both modes."""
    opts = [
        TUNED,
        "small",
        "lgl2o:preset+small",
        *(f"blend:preset+small,lam={lam}" for lam in (0.25, 0.5, 0.75)),
        f"hub:preset+small,clip={CLIP}",
        *_sigma_rule_contenders(),
    ]
    return grid_points(SIGMA_TASKS, opts, seeds or 3, size or "cpu")


SCALE_TASKS = ("sine_lstm", "fmnist_mlp")
LOSS_SCALES = (1e-3, None, 1e3)  # None: the task as it is


def _sigma_scale(size: str | None, seeds: int | None) -> list[Point]:
    """The loss-scale sweep: two tasks × loss × 10⁻³, 1, 10³ × the preset, the learned
    optimizer alone and every σ rule in both modes (the choice's scale check holds every
    candidate to it)."""
    opts = ["preset", "small", *_sigma_rule_contenders()]
    base = grid_points(SCALE_TASKS, opts, seeds or 3, size or "cpu")
    return [replace(p, loss_scale=c) for p in base for c in LOSS_SCALES]  # still seed-major


# The learned optimizer's quality benchmark: its held-out tasks (`hubopt.tasks.lopt_heldout`;
# headline: the final training loss) × the tuned hand preset, the learned optimizer alone,
# LGL2O and the three HUB variants.
LOPT_CONTENDERS = (
    TUNED,
    *PAPER_CONTENDERS,
    "hub:preset+small,mode=inverted",
    f"hub:preset+small,clip={CLIP}",
)


def _lopt(size: str | None, seeds: int | None) -> list[Point]:
    """The learned optimizer's validation tasks × `LOPT_CONTENDERS` (3 seeds, "cpu": 1,000
    steps)."""
    from hubopt.tasks.lopt_heldout import VALIDATION_NAMES

    return grid_points(VALIDATION_NAMES, LOPT_CONTENDERS, seeds or 3, size or "cpu")


# Its untouched test set (issue 12; `lopt_heldout.TEST_NAMES`): the tuned Adam and AdamW
# with warm-up + cosine (rates of `LR_GRID`, chosen on valid), Adam at a constant 1e-3,
# the learned optimizer alone, and default and clipped HUB with Adam. Run at each horizon
# (`--steps 1000`, 2000, 5000) into its own folder.
ADAMW_WEIGHT_DECAY = 1e-4  # optax.adamw's default


def _lopt_test(size: str | None, seeds: int | None) -> list[Point]:
    """The learned optimizer's test tasks × tuned Adam/AdamW, constant Adam, learned, HUB."""
    from hubopt.tasks.lopt_heldout import LR_GRID, TEST_NAMES

    adamw = [f"adamw,lr={lr:g},wd={ADAMW_WEIGHT_DECAY:g}" for lr in LR_GRID]
    opts = (
        TUNED,
        *adamw,
        "adam,lr=1e-3,schedule=constant",
        "small",
        "hub:preset+small",
        f"hub:preset+small,clip={CLIP}",
    )
    return grid_points(TEST_NAMES, opts, seeds or 3, size or "cpu")


# `hubopt demo`'s grid: (task, size, steps or None for the task's own). One function far out
# of the learned optimizer's distribution, one recurrent net, one net with a ≥ 10⁴-entry
# tensor (784 × 128), at budgets that keep the whole demo near 5 minutes on 2 cores.
DEMO_TASKS = (
    ("nonconvex_l1cos", "cpu", None),
    ("sine_lstm", "cpu", 300),
    ("fmnist_mlp", "cpu", 600),
)
DEMO_CONTENDERS = (
    "preset",
    "{L}",
    "lgl2o:preset+{L}",
    "hub:preset+{L}",
    f"hub:preset+{{L}},clip={CLIP}",
)


def demo_points(seeds: int = 2, learned: str = "small") -> list[Point]:
    """The demo's grid with `learned` (a learned spec text: "small", "velo", or a
    "stand-in(...)") in the learned slot; `None` leaves out every contender that needs one."""
    _check_seeds(seeds)
    opts = [o for o in DEMO_CONTENDERS if learned is not None or "{L}" not in o]
    if learned is not None and learned.startswith("stand-in"):  # only in a learned slot
        opts = [o for o in opts if o != "{L}"]
    opts = [o.replace("{L}", learned or "") for o in opts]
    return seed_major(
        Point(task, o, s, size, steps)
        for task, size, steps in DEMO_TASKS
        for o in opts
        for s in range(seeds)
    )


def _demo(size: str | None, seeds: int | None) -> list[Point]:
    """`hubopt demo`'s grid with the bundled learned optimizer (its sizes are fixed)."""
    if size is not None:
        raise ValueError("the demo preset has its own sizes; leave out --size")
    return demo_points(seeds or 2)


# name -> (size, number of seeds) -> points; None means the preset's own default
PRESETS: dict[str, Callable[[str | None, int | None], list[Point]]] = {
    "smoke": _smoke,
    "demo": _demo,
    **{name: _table(name) for name in TABLES},
    "ablations": _ablations,
    "lopt": _lopt,
    "lopt_test": _lopt_test,
    "sigma": _sigma,
    "sigma_scale": _sigma_scale,
}


def grid_points(
    tasks: Iterable[str], opts: Iterable[str], seeds: int = 3, size: str = "cpu"
) -> list[Point]:
    """The grid tasks × optimizer specs × seeds 0 … seeds − 1, every spec checked against
    every task first (a bad spec fails before anything runs). The spec `"tuned"` stands
    for the task's preset at every rate of its `lr_grid` (the tuned baseline, whose rate
    `hubopt report` chooses on the valid split)."""
    from hubopt.bench import spec_language

    tasks, opts = list(tasks), list(opts)
    if not tasks or not opts:
        raise ValueError("a grid needs at least one task and one optimizer spec")
    _check_seeds(seeds)
    out = []
    for task_name in tasks:
        task = _task(task_name, size)
        task_opts = [x for o in opts for x in (_tuned_grid(task) if o == TUNED else [o])]
        for opt in task_opts:
            spec_language.parse(opt, task)
        out += [Point(task_name, o, s, size) for o in task_opts for s in range(seeds)]
    return seed_major(out)


def seed_major(points: Iterable[Point]) -> list[Point]:
    """`points` seed by seed (every task and optimizer at seed 0 first, then seed 1, …),
    otherwise in their order: a sweep stopped part-way has compared every contender."""
    return sorted(points, key=lambda p: p.seed)


def preset_tasks(points: list[Point], preset: str, tasks: list[str]) -> list[Point]:
    """The points of a preset's grid on `tasks` only (`hubopt sweep PRESET --tasks A,B`):
    the same runs, and so the same records, as the whole preset's on those tasks."""
    held = {p.task for p in points}
    wanted = [t for t in tasks if t]
    missing = [t for t in wanted if t not in held]
    if not wanted or missing:
        raise ValueError(
            f"preset {preset!r} has no task {', '.join(map(repr, missing)) or 'given'}; "
            f"its tasks: {', '.join(sorted(held))}"
        )
    return [p for p in points if p.task in wanted]


def with_learned(points: Iterable[Point], learned: str) -> list[Point]:
    """`points` with the learned optimizer `learned` (a spec text: `velo`, `small`,
    `theta,path=FILE`) in the learned slot of every contender that has one: a learned
    optimizer alone is replaced by it, a combination (hub:, lgl2o:, blend:HAND+LEARNED)
    takes it as its learned member, options and hand member unchanged; hand-designed
    contenders stay as they are (and so reuse their records). The learned optimizer
    must be usable here: without VeLO's cached checkpoint this is a `ValueError` that
    says how to get it, before anything runs."""
    from hubopt.bench import spec_language

    _learned_spec(learned)  # checked once, here; each run parses it again
    out = []
    for p in points:
        spec = spec_language.parse(p.opt, _task(p.task, p.size))
        has_slot = not isinstance(spec, spec_language.HandSpec)
        out.append(replace(p, learned=learned) if has_slot else p)
    return out


def _learned_spec(text: str):
    """The `LearnedSpec` that `text` names, checked to be usable on this machine."""
    from hubopt.bench import optimizers, spec_language

    spec = spec_language.parse(text)
    if not isinstance(spec, spec_language.LearnedSpec):
        raise ValueError(
            f"the learned slot takes a learned optimizer (velo, small, theta,path=FILE), "
            f"got {text!r}"
        )
    if spec.name == "velo":
        choice = optimizers.resolve_learned("velo")  # is its checkpoint cached?
        if not choice.available:
            why = "; ".join(choice.notes) or choice.reason
            raise ValueError(
                f"VeLO's checkpoint is not on this machine ({why}): download it once with "
                "`hubopt velo download` (into $HUBOPT_CACHE/velo/params, by default "
                "~/.cache/hubopt/velo/params; offline: `hubopt velo download --help`)"
            )
    try:  # loads and checks the checkpoint (VeLO's SHA-256, a θ file's contents)
        optimizers.build(spec.to_dict(), num_steps=1, warn_past_budget=False)
    except Exception as e:
        raise ValueError(f"learned optimizer {text!r} cannot be built: {e}") from e
    return spec


def point_spec(point: Point, task=None) -> dict:
    """The optimizer spec dict `point` runs: its `opt` parsed against its task (`task`,
    default: the point's own), with `point.learned` in the learned slot when set."""
    from hubopt.bench import spec_language

    task = task or _task(point.task, point.size, point.steps, point.loss_scale)
    spec = spec_language.parse(point.opt, task)
    if point.learned is not None:
        spec = spec_language.replace_learned(spec, spec_language.parse(point.learned))
    return spec.to_dict()


def _check_seeds(seeds) -> None:
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be a positive number of seeds, got {seeds!r}")


def preset_points(name: str, size: str | None = None, seeds: int | None = None) -> list[Point]:
    """The grid of preset `name`; `size` and `seeds` (a count: seeds 0 … seeds − 1) override
    the preset's own."""
    if name not in PRESETS:
        raise ValueError(f"unknown sweep preset {name!r}; presets: {', '.join(PRESETS)}")
    if seeds is not None:
        _check_seeds(seeds)
    return seed_major(PRESETS[name](size, seeds))


# ------------------------------------------------------------------------------ one run

_TASKS: dict[tuple[str, str], object] = {}  # built tasks, per process


def _task(name: str, size: str, steps: int | None = None, loss_scale: float | None = None):
    """Task `name` at `size`, over `steps` steps (None: its own budget) with its preset's
    schedule laid over them (`Task.with_budget`), its training loss × `loss_scale`
    (`Task.with_loss_scale`); built once per process."""
    from hubopt.tasks import get_task

    key = (name, size, steps, loss_scale)
    if key not in _TASKS:
        base = _TASKS.get((name, size, None, None)) or get_task(name, size=size)
        _TASKS[(name, size, None, None)] = base
        task = base if steps is None else base.with_budget(steps)
        _TASKS[key] = task if loss_scale is None else task.with_loss_scale(loss_scale)
    return _TASKS[key]


def run_point(
    point: Point | dict, out_dir: str, command: str | None = None, overwrite: bool = False
) -> str:
    """Runs `point` (or reuses its finished record) and returns the record's path;
    `overwrite` replaces a record of another run at the same path (else an error)."""
    from hubopt.bench import optimizers, records, runner

    point = Point(**point) if isinstance(point, dict) else point
    task = _task(point.task, point.size, point.steps, point.loss_scale)
    spec = point_spec(point, task)

    def train(**kwargs):
        return runner.train_and_record(
            task,
            spec,
            num_steps=point.steps,
            seed=point.seed,
            num_evals=runner.DEFAULT_EVALS if point.evals is None else point.evals,
            out_dir=out_dir,
            reuse=True,
            overwrite=overwrite,
            command=command,
            log=lambda *_: None,
            **kwargs,
        )

    path = runner.existing_record_path(out_dir, task.name, optimizers.label(spec), point.seed)
    if path.exists():
        try:
            records.read(path)
        except records.RecordError:  # an unreadable record: keep it aside, redo the run
            aside = path.with_name(path.name + ".damaged")
            os.replace(path, aside)
            print(
                f"hubopt sweep: {path} is unreadable; moved to {aside}, rerunning", file=sys.stderr
            )
    return str(train(path=path))  # the path looked up once, here


def _set_up_process(compile_cache: bool, quick_compile: bool) -> None:
    """What every process of a sweep turns on before its first run (see `run_sweep`)."""
    if quick_compile:
        from hubopt._src.quick_compile import use_quick_compile

        use_quick_compile()
    if compile_cache:
        from hubopt._src.compile_cache import enable_compile_cache

        enable_compile_cache()


def _process_worker(args):
    point, out_dir, command, setup = args
    _set_up_process(*setup)
    return run_point(point, out_dir, command)


class NotEnoughGPUs(RuntimeError):
    """No node of the Ray cluster has the GPUs one run asks for (`gpus_per_run`)."""


def _check_gpus(ray, gpus_per_run: int, address: str | None) -> None:
    """Refuses, before any run, a cluster none of whose nodes has `gpus_per_run` GPUs
    (a run's GPUs are on one node, so the cluster's total is not enough)."""
    per_node = [n["Resources"].get("GPU", 0) for n in ray.nodes() if n.get("Alive")]
    most = max(per_node, default=0)
    if most < gpus_per_run:
        where = f"the Ray cluster at {address}" if address else "this machine's Ray"
        raise NotEnoughGPUs(
            f"each run needs {gpus_per_run} GPU(s) on one node, but no node of {where} "
            f"has that many (the most on one node: {most:g}; in all: {sum(per_node):g}); "
            "give a smaller --gpus-per-run or a cluster with bigger GPU nodes"
        )


@contextlib.contextmanager
def _ray_session(workers: int, address: str | None, gpus_per_run: int):
    """Ray, started for the sweep (a local Ray of `workers` CPUs, or the cluster at
    `address`) unless this process has already started it, and shut down after if it was
    started here; a cluster too small for `gpus_per_run` is refused first."""
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
        if gpus_per_run:
            _check_gpus(ray, gpus_per_run, address)
        yield ray
    finally:
        if started:
            ray.shutdown()


def _ray_map(ray, points, out_dir, command, setup, gpus_per_run):
    """The record paths of `points` run as Ray tasks, in order (yielded as each is ready)."""
    options = {"num_cpus": 1}
    if gpus_per_run:
        # Ray sets CUDA_VISIBLE_DEVICES to the run's GPUs; max_calls=1 (Ray's default for
        # GPU tasks, named here on purpose): a fresh worker process per run, whose JAX
        # starts on those GPUs and gives their memory back when the run ends
        options |= {"num_gpus": gpus_per_run, "max_calls": 1}
    remote = ray.remote(**options)(_process_worker)
    out = str(Path(out_dir).resolve())
    refs = [remote.remote((asdict(p), out, command, setup)) for p in points]
    for ref in refs:
        yield ray.get(ref)


def _count(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def check_executor_options(
    executor: str, *, workers: int = 2, gpus_per_run: int = 0, overwrite: bool = False
) -> None:
    """Raises a ValueError naming the option (as `run_sweep`'s argument and as `hubopt
    sweep`'s flag) that `executor` cannot take: the one check of both."""
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; executors: {', '.join(EXECUTORS)}")
    if not _count(workers) or workers < 1:
        raise ValueError(f"workers (--workers) must be >= 1, got {workers!r}")
    if not _count(gpus_per_run) or gpus_per_run < 0:
        raise ValueError(
            f"gpus_per_run (--gpus-per-run) must be a number of GPUs >= 0, got {gpus_per_run!r}"
        )
    if gpus_per_run and executor != "ray":
        raise ValueError(
            f"gpus_per_run (--gpus-per-run) is for the ray executor only, not {executor!r}"
        )
    if overwrite and executor != "local":
        raise ValueError(
            f"overwrite (--overwrite) is for the local executor only, not {executor!r}"
        )


def run_sweep(
    points: Iterable[Point],
    out_dir: str,
    *,
    executor: str = "local",
    workers: int = 2,
    ray_address: str | None = None,
    gpus_per_run: int = 0,
    command: str | None = None,
    progress: bool | None = None,
    overwrite: bool = False,
    compile_cache: bool = True,
    quick_compile: bool = False,
) -> list[str]:
    """Runs every point (finished records are reused) and returns the record paths in order.

    `workers` is the number of processes of the "process" executor (and of the CPUs
    of a local Ray started for the sweep); `ray_address` the cluster of "ray";
    `gpus_per_run` ("ray" only): the GPUs each run holds, on one node (Ray sets the run's
    CUDA_VISIBLE_DEVICES; the runner computes on JAX's default device, the first of
    them); a cluster with no node of that many is refused before any run
    (`NotEnoughGPUs`);
    `overwrite` (local executor only) replaces records of other runs at the same paths;
    `compile_cache`: every process of the sweep keeps its compiled programs in JAX's
    persistent compilation cache and reads back those compiled before
    (`hubopt._src.compile_cache`; `HUBOPT_COMPILE_CACHE=off` turns it off);
    `quick_compile`: XLA's quick-compile flags in every process of the sweep
    (`hubopt._src.quick_compile`: about 3× faster compiling, slower steps; for smoke runs;
    in a process whose JAX backend has started already it warns and has no effect there).
    """
    points = list(points)
    check_executor_options(
        executor, workers=workers, gpus_per_run=gpus_per_run, overwrite=overwrite
    )
    from tqdm import tqdm

    # Ray is started and its GPUs checked before anything is written or run
    session = (
        _ray_session(workers, ray_address, gpus_per_run)
        if executor == "ray"
        else contextlib.nullcontext()
    )
    with session as ray:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        if progress is None:
            from hubopt.bench.runner import _interactive

            progress = _interactive()
        bar = tqdm(total=len(points), desc="sweep", unit="run", disable=not progress)
        paths: list[str] = []
        try:
            setup = (compile_cache, quick_compile)
            if executor == "local":
                _set_up_process(*setup)
                for point in points:
                    bar.set_postfix_str(str(point), refresh=False)
                    paths.append(run_point(point, out_dir, command, overwrite))
                    bar.update()
            elif executor == "ray":
                for path in _ray_map(ray, points, out_dir, command, setup, gpus_per_run):
                    paths.append(path)
                    bar.update()
            else:
                import concurrent.futures as futures
                import multiprocessing

                context = multiprocessing.get_context("spawn")  # no forked JAX runtimes
                with futures.ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
                    jobs = [(asdict(p), out_dir, command, setup) for p in points]
                    for path in pool.map(_process_worker, jobs):
                        paths.append(path)
                        bar.update()
        finally:
            bar.close()
    return paths


# ------------------------------------------------------------------------------ CLI


def add_arguments(parser) -> None:
    from hubopt.tasks import SIZES

    parser.add_argument(
        "preset", nargs="?", help=f"one of: {', '.join(PRESETS)}; or give --tasks and --opt"
    )
    parser.add_argument(
        "--tasks",
        help="comma-separated task names: with --opt, a grid of one's own; with a preset, "
        "that preset's grid on these of its tasks",
    )
    parser.add_argument(
        "--opt",
        action="append",
        metavar="SPEC",
        help="an optimizer spec of the grid (repeat); 'tuned': the preset at every rate of "
        "the task's lr_grid",
    )
    parser.add_argument(
        "--learned",
        metavar="LEARNED",
        help="the learned optimizer in every contender's learned slot (the learned "
        "optimizer alone; hub:/lgl2o:/blend:HAND+LEARNED's learned member), nothing else "
        "changed: velo (after `hubopt velo download`), small (the presets' own) or "
        "theta,path=FILE; hand-designed contenders keep their records",
    )
    parser.add_argument("--seeds", type=int, help="number of seeds (0 … N−1; default: preset's)")
    parser.add_argument("--size", choices=SIZES, help="task size (default: the preset's)")
    parser.add_argument("--steps", type=int, help="steps of every run (default: each task's)")
    parser.add_argument("--executor", choices=EXECUTORS, default="local")
    parser.add_argument(
        "--workers", type=int, default=2, help="processes (process), CPUs of a local Ray (ray)"
    )
    parser.add_argument("--ray-address", help="a running Ray cluster (default: a local Ray)")
    parser.add_argument(
        "--gpus-per-run",
        type=int,
        default=0,
        metavar="N",
        help="with --executor ray: the GPUs each run holds, on one node (Ray sets its "
        "CUDA_VISIBLE_DEVICES; the run computes on the first); a cluster with no node of N "
        "GPUs is refused before anything runs",
    )
    parser.add_argument("--out", default=None, help="records folder (default: runs/<preset>)")
    from hubopt._src.compile_cache import add_no_compile_cache_argument

    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="rerun every point and replace its record, a finished one too (local executor "
        "only; default: keep the records of finished runs, refuse a different run's file)",
    )
    add_no_compile_cache_argument(parser)
    parser.add_argument(
        "--quick-compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="XLA's quick-compile flags (about 3× faster compiling, 3-8× slower steps; "
        "default: on for the smoke preset only, whose runs are mostly compiling)",
    )


def run(args) -> int:
    """`hubopt sweep`: every point of the preset (or of the --tasks × --opt grid), resuming
    from the records in --out."""
    own_grid = args.preset is None and (args.tasks is not None or args.opt is not None)
    try:
        if args.preset is not None and args.opt is not None:
            raise ValueError("give a preset or a grid (--tasks and --opt), not both")
        if own_grid:
            if not args.tasks or not args.opt:
                raise ValueError("a grid of one's own needs both --tasks and --opt")
            tasks = [t for t in args.tasks.split(",") if t]
            seeds = 3 if args.seeds is None else args.seeds  # --seeds 0 is an error, not 3
            points = grid_points(tasks, args.opt, seeds, args.size or "cpu")
        elif args.preset is None:
            raise ValueError(f"give a preset ({', '.join(PRESETS)}) or --tasks and --opt")
        else:
            points = preset_points(args.preset, args.size, args.seeds)
            if args.tasks is not None:
                points = preset_tasks(points, args.preset, args.tasks.split(","))
        if args.steps is not None:
            if args.steps < 1:
                raise ValueError(f"--steps must be >= 1, got {args.steps}")
            points = [replace(p, steps=args.steps) for p in points]
        if args.learned is not None:
            points = with_learned(points, args.learned)
        check_executor_options(
            args.executor,
            workers=args.workers,
            gpus_per_run=args.gpus_per_run,
            overwrite=args.overwrite,
        )
    except ValueError as e:
        print(f"hubopt sweep: error: {e}", file=sys.stderr)
        return 2
    name = args.preset or "grid"
    out = args.out or f"runs/{name}"
    start = time.perf_counter()
    try:
        paths = run_sweep(
            points,
            out,
            executor=args.executor,
            workers=args.workers,
            ray_address=args.ray_address,
            gpus_per_run=args.gpus_per_run,
            command=getattr(args, "command_line", None),
            compile_cache=not args.no_compile_cache,
            quick_compile=args.preset == "smoke"
            if args.quick_compile is None
            else args.quick_compile,
            overwrite=args.overwrite,
        )
    except NotEnoughGPUs as e:
        print(f"hubopt sweep: error: {e}", file=sys.stderr)
        return 2
    except FileExistsError as e:  # a record of another run where a point's record goes
        print(f"hubopt sweep: error: {e}", file=sys.stderr)
        return 1
    print(
        f"hubopt sweep {name}: {len(paths)} records in {out} ({time.perf_counter() - start:.0f} s)"
    )
    return 0
