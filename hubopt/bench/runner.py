"""Train one optimizer on one task and write one record (`hubopt run`).

`train(task, built, ...)` runs; `train_and_record(task, spec, ...)` runs and
writes the record; `add_arguments`/`run(args)` are the `hubopt run` command.

The training loop is a jitted `lax.scan` over chunks of steps of the one training
step (`hubopt._src.train_step`, which meta-training's inner loop runs too):

    value, g = value_and_grad(task.loss)(params, batch)
    U, state = tx.update(g, state, params, value=value, value_fn=loss(·, batch))
    params   = params + U

(each extra arg reaches the optimizer only if it accepts it; `value_fn` is
what LGL2O evaluates its candidates with, on the same batch). Timing counts
only the chunks of steps (compiled ahead, then timed with
`block_until_ready`); evaluation between chunks is untimed and logged apart.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import functools
import importlib.metadata
import json
import math
import os
import platform
import re
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from hubopt._src.atomic_write import write_atomic
from hubopt._src.git_state import git_state
from hubopt._src.hub import SIGMA_HIST_EDGES
from hubopt._src.train_step import train_step
from hubopt._src.tree_paths import leaf_paths
from hubopt.bench import optimizers, records
from hubopt.tasks import Task, get_task

DEFAULT_POINTS = 1000  # curve points kept per record
DEFAULT_EVALS = 20  # untimed evaluations per run (plus one at step 0)
TRAIN_LOSS = "train:loss"  # the training split's loss among an evaluation's values


def positive_int(name: str, value) -> int:
    """`value` as an int >= 1, or a `ValueError` naming `name`."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


# --------------------------------------------------------------------------- metadata


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


_GIT_AT_START: dict | None = None


def _git_at_start() -> dict:
    """The git state when this process first trained: the code it runs, even if commits
    land while a long sweep goes on."""
    global _GIT_AT_START
    if _GIT_AT_START is None:
        _GIT_AT_START = git_state()
    return _GIT_AT_START


def metadata(command: str | None = None) -> dict:
    """Versions, machine, git state, UTC date and the command line, for a record; the
    GPUs the process was given (`CUDA_VISIBLE_DEVICES`, as Ray sets it) and its XLA
    flags (`XLA_FLAGS`, e.g. `hubopt._src.quick_compile`'s), where set."""
    device = jax.devices()[0]
    gpus = os.environ.get("CUDA_VISIBLE_DEVICES")
    xla_flags = os.environ.get("XLA_FLAGS", "").strip()
    return {
        "versions": {
            "hubopt": _version("hubopt"),
            "jax": jax.__version__,
            "jaxlib": _version("jaxlib"),
            "optax": optax.__version__,
            "flax": _version("flax"),
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "device": f"{device.platform}:{device.device_kind}",
        **({} if gpus is None else {"cuda_visible_devices": gpus}),
        **({} if not xla_flags else {"xla_flags": xla_flags}),
        "git": _git_at_start(),
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "command": command
        if command is not None
        else " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }


# --------------------------------------------------------------------------- training


def _subsample(values: np.ndarray, max_points: int) -> dict:
    """Curve points: every `stride`-th step and the last, with window means."""
    n = len(values)
    stride = max(1, math.ceil(n / max_points))
    idx = list(range(0, n, stride))
    if idx[-1] != n - 1:
        idx.append(n - 1)
    means, prev = [], -1
    for i in idx:
        window = values[prev + 1 : i + 1]
        means.append(float(np.mean(window)))
        prev = i
    return {"step": idx, "loss": [float(values[i]) for i in idx], "loss_mean": means}


_last_init: list = []  # [(task, init key data, params)] of the newest run in this process


def _initial_params(task: Task, init_key: jax.Array):
    """`task.init(init_key)`, reused when the previous run of this process had the same
    task and key (a sweep runs every optimizer of a task and seed one after another;
    initialising eagerly compiles every operation of the model's init anew)."""
    key_data = np.asarray(jax.random.key_data(init_key)).tobytes()
    if _last_init and _last_init[0][0] is task and _last_init[0][1] == key_data:
        return _last_init[0][2]
    params = task.init(init_key)
    _last_init[:] = [(task, key_data, params)]
    return params


def _interactive() -> bool:
    """Whether progress bars are wanted: stderr is a terminal and this is not CI."""
    return sys.stderr.isatty() and not os.environ.get("CI")


def train(
    task: Task,
    built: optimizers.Built,
    *,
    num_steps: int,
    seed: int,
    num_evals: int = DEFAULT_EVALS,
    max_points: int = DEFAULT_POINTS,
    progress: bool | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
) -> dict:
    """Runs `built` on `task`; returns the record fields that describe the run.

    `progress`: a tqdm bar over the steps (default: only on a terminal, never in CI).
    `checkpoint_dir`: after every evaluation the run's state (params, optimizer state)
    and its progress so far (losses, evaluations, timings) are saved there
    (`hubopt.checkpoint`); a run started with a folder that holds a checkpoint of this
    very run continues from its newest step and gives the same record, bit for bit,
    as a run never stopped (timings apart)."""
    num_steps = positive_int("num_steps", num_steps)
    num_evals = positive_int("num_evals", num_evals)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    t_start = time.perf_counter()
    tx = built.tx
    init_key, data_key = jax.random.split(jax.random.key(int(seed)))
    params = _initial_params(task, init_key)
    opt_state = jax.jit(tx.init)(params)  # one compile, not one per operation

    lengths = chunk_lengths(num_steps, num_evals)
    eval_schedule = evaluation_steps(num_steps, num_evals)
    # a HUB run takes σ histograms inside its training steps (`_SigmaHistograms`)
    hist = _SigmaHistograms.of(built.spec, params, opt_state, eval_schedule)

    # the seed's data key is an argument of the compiled programs, not a constant in
    # them: every seed of a run compiles to the same program, which JAX's persistent
    # compilation cache (on in sweeps) then compiles once
    def chunk(carry, start, key, length):
        batch_key = functools.partial(jax.random.fold_in, key)
        steps = start + jnp.arange(length, dtype=jnp.int32)
        if hist is None:
            return jax.lax.scan(train_step(task, tx, batch_key), carry, steps)
        one_step = train_step(task, tx, batch_key, observe=hist.observe)
        (*carry, counts), values = jax.lax.scan(one_step, (*carry, hist.empty()), steps)
        return tuple(carry), values, counts

    carry = (params, opt_state)
    t0 = time.perf_counter()
    compiled = {
        n: jax.jit(functools.partial(chunk, length=n))
        .lower(carry, jnp.int32(0), data_key)
        .compile()
        for n in sorted(set(lengths))
    }
    # untimed evaluations on the valid split: its loss and, where the task has one, every
    # metric (one pass: a task's valid loss is its valid metrics' "loss" unless it has
    # its own eval_fn)
    with_metrics = "valid" in task.splits and task.metrics_fn is not None
    # a task whose headline is its training loss also logs the whole training split's
    # loss (exact, unlike minibatch losses): what a spike after memorising shows in
    with_train = task.metric_split == "train" and task.metrics_fn is not None

    def evaluation(p) -> dict[str, float]:
        # the task's own compiled programs (`Task.evaluate`, `Task.jitted`): compiled once
        # per task and process, shared by every optimizer of a sweep and by the final
        # metrics below
        out = task.evaluate(p, "valid") if with_metrics else {}
        if task.eval_fn is not None or "loss" not in out:
            out["loss"] = float(task.jitted("eval_loss", task.eval_loss)(p))
        if with_train:
            out[TRAIN_LOSS] = task.evaluate(p, "train")["loss"]
        return out

    compile_time = time.perf_counter() - t0

    def evaluate_at(step, p, state):
        values = evaluation(p)
        eval_steps.append(step)
        eval_losses.append(values.pop("loss"))
        for k, v in values.items():
            eval_metrics.setdefault(k, []).append(v)
        diag = optimizers.diagnostics(built.spec, state)
        if diag:
            diag_curve.append({"step": step, **diag})

    values, chunk_times = [], []
    eval_steps, eval_losses, eval_metrics, diag_curve, sigma_counts = [], [], {}, [], {}
    identity = {"task": task.name, "size": task.size, "optimizer": built.label}
    identity |= {"seed": int(seed), "num_steps": num_steps, "num_evals": num_evals}
    resumed = _resume(checkpoint_dir, identity, carry)
    if resumed is None:
        evaluate_at(0, params, opt_state)
        step = 0
    else:
        carry, saved = resumed
        step = saved["step"]
        values = [np.asarray(v, np.float64) for v in saved["values"]]
        chunk_times, eval_steps, eval_losses = (
            saved[k] for k in ("chunk_times", "eval_steps", "eval_losses")
        )
        eval_metrics, diag_curve, sigma_counts = (
            saved[k] for k in ("eval_metrics", "diag_curve", "sigma_counts")
        )
        done = eval_schedule.index(step)  # the chunks already run
        lengths = lengths[done:]
    bar = tqdm(
        total=num_steps,
        initial=step,  # a resumed run's bar starts where it stopped
        desc=f"{task.name} {built.label} seed {seed}",
        unit="step",
        leave=False,
        disable=not (_interactive() if progress is None else progress),
    )
    for n in lengths:
        t0 = time.perf_counter()
        out = compiled[n](carry, jnp.int32(step), data_key)
        jax.block_until_ready(out)
        chunk_times.append((time.perf_counter() - t0) / n)
        carry, vals = out[:2]
        if hist is not None:  # the histograms of the steps this chunk took
            hist.collect(sigma_counts, out[2], range(step, step + n))
        step += n
        values.append(np.asarray(vals, np.float64))
        evaluate_at(step, *carry)  # untimed
        if checkpoint_dir is not None:
            progress_so_far = {
                **identity,
                "step": step,
                "values": [v.tolist() for v in values],
                "chunk_times": chunk_times,
                "eval_steps": eval_steps,
                "eval_losses": eval_losses,
                "eval_metrics": eval_metrics,
                "diag_curve": diag_curve,
                "sigma_counts": sigma_counts,
            }
            _save_progress(checkpoint_dir, step, carry, progress_so_far)
        bar.update(n)
    bar.close()
    values = np.concatenate(values)
    bad = np.flatnonzero(~np.isfinite(values))
    # the first step whose training loss is NaN or infinite (None: the run stayed finite)
    first_nonfinite = int(bad[0]) if len(bad) else None

    # best: over every step and evaluation of a deterministic task (all exact losses);
    # over the evaluations only for a stochastic one (minibatch losses are noisy)
    if task.stochastic:
        all_steps, all_losses = np.asarray(eval_steps), np.asarray(eval_losses)
    else:
        all_steps = np.concatenate([np.arange(num_steps), eval_steps])
        all_losses = np.concatenate([values, eval_losses])
    best = int(np.argmin(np.where(np.isnan(all_losses), np.inf, all_losses)))
    best_loss = float(all_losses[best])  # NaN only if every loss is NaN
    # the task's own metrics of the final params, untimed: valid (for choosing), test
    # (for reporting only) where the task has those splits, and its metric_split (train,
    # for a task whose headline is its final training loss)
    final_splits = [s for s in task.splits if s in ("valid", "test", task.metric_split)]
    metrics = {split: task.evaluate(carry[0], split) for split in final_splits}
    return {
        "num_steps": num_steps,
        "curve": _subsample(values, max_points),
        "eval": {
            "step": eval_steps,
            "loss": eval_losses,
            "valid": {k: v for k, v in eval_metrics.items() if k != TRAIN_LOSS},
            **({"train": {"loss": eval_metrics[TRAIN_LOSS]}} if with_train else {}),
        },
        "first_nonfinite_step": first_nonfinite,
        "best_loss": best_loss,
        "best_step": int(all_steps[best]),
        "final_loss": eval_losses[-1],
        "metrics": metrics,
        "timing": {
            "step_time_s": float(np.median(chunk_times)),  # per step, median over chunks
            "step_time_stats_s": {
                "mean": float(np.mean(chunk_times)),
                "min": float(np.min(chunk_times)),
                "max": float(np.max(chunk_times)),
                "chunks": len(chunk_times),
            },
            "steps_timed": num_steps,
            "compile_time_s": compile_time,
            "wall_time_s": time.perf_counter() - t_start,
        },
        "diagnostics": optimizers.diagnostics(built.spec, carry[1]),
        "diagnostics_curve": diag_curve,  # the same at every evaluation (HUB, LGL2O)
        "sigma_histograms": None
        if hist is None
        else {"edges": list(SIGMA_HIST_EDGES), "steps": hist.steps, "counts": sigma_counts},
        "_final_state": carry,
    }


def _save_progress(folder, step: int, carry, progress: dict) -> None:
    """The run's progress JSON first, then its state as checkpoint step `step`: a step
    that `hubopt.checkpoint` lists always has its progress beside it."""
    import hubopt.checkpoint

    write_atomic(Path(folder) / f"progress-{step}.json", json.dumps(progress))
    hubopt.checkpoint.save(folder, step, {"params": carry[0], "opt_state": carry[1]}, keep=2)


def _resume(folder, identity: dict, carry):
    """(carry, progress) of the newest checkpoint of this run in `folder`, or None when
    there is none; a checkpoint of another run is a `ValueError`."""
    if folder is None:
        return None
    import hubopt.checkpoint

    step = hubopt.checkpoint.latest_step(folder)
    if step is None:
        return None
    progress = json.loads((Path(folder) / f"progress-{step}.json").read_text())
    other = {k: (progress.get(k), v) for k, v in identity.items() if progress.get(k) != v}
    if other:
        raise ValueError(
            f"{folder} holds a checkpoint of another run (saved, asked): {other}; "
            "give another --out or remove the folder"
        )
    like = {"params": carry[0], "opt_state": carry[1]}
    state = hubopt.checkpoint.restore(folder, like=like, step=step)
    return (state["params"], state["opt_state"]), progress


SIGMA_HIST_AT = (0.0, 0.1, 0.5, 1.0)  # fractions of a HUB run with a σ histogram


def chunk_lengths(num_steps: int, num_evals: int) -> list[int]:
    """The lengths of the chunks of steps between evaluations: `num_evals` of
    `num_steps // num_evals` steps (at least 1), then what is left."""
    chunk_len = max(1, num_steps // num_evals)
    lengths = [chunk_len] * (num_steps // chunk_len)
    if num_steps % chunk_len:
        lengths.append(num_steps % chunk_len)
    return lengths


def evaluation_steps(num_steps: int, num_evals: int) -> list[int]:
    """The steps a run evaluates at: 0 and the end of every chunk (`chunk_lengths`)."""
    return [0, *np.cumsum(chunk_lengths(num_steps, num_evals)).tolist()]


class _SigmaHistograms(NamedTuple):
    """A HUB run's σ histograms (`hubopt.sigma_histogram`), taken inside its training
    steps: at `steps`, the evaluation steps nearest 0, 10 and 50 % of the run and its
    last step, the histogram of the σ that step's update weighs with (from the step's
    own gradient; for a σ rule with state, from the state the update starts from).
    The training program carries them as `(len(steps), bins)` counts per tensor."""

    steps: list[int]
    counts: Callable[[Any, Any], Any]  # (grads, opt_state) -> counts per tensor
    shapes: Any  # the counts' shapes and dtypes

    @classmethod
    def of(cls, spec, params, opt_state, eval_schedule: list[int]):
        """For a HUB run evaluated at the steps `eval_schedule` (0, …, num_steps), its
        histograms; None for other runs and for a σ rule that reads the members' updates."""
        if spec.get("name") != "hub":
            return None
        from hubopt import SIGMA_RULES, HubState, sigma_histogram
        from hubopt._src.state_search import find_one

        clip = None if spec.get("clip") is None else tuple(spec["clip"])
        rule = spec.get("sigma", "softmax")
        if SIGMA_RULES[rule].uses_updates:  # σ from the members' updates: not from grads
            return None
        num_steps = eval_schedule[-1]
        nearest = (min(eval_schedule, key=lambda s: abs(s - f * num_steps)) for f in SIGMA_HIST_AT)
        steps = sorted({min(int(s), num_steps - 1) for s in nearest})

        def counts(grads, state):
            rule_state = None
            if SIGMA_RULES[rule].stateful:  # the state the step's update starts from
                rule_state = find_one(state, HubState, "the sigma histogram").rule_state
            return sigma_histogram(grads, sigma=rule, clip=clip, rule_state=rule_state)

        return cls(steps, counts, jax.eval_shape(counts, params, opt_state))

    def empty(self):
        """No histogram yet: zeros of shape (len(steps), bins) per tensor."""
        k = len(self.steps)
        return jax.tree_util.tree_map(lambda s: jnp.zeros((k, *s.shape), s.dtype), self.shapes)

    def observe(self, acc, step, grads, opt_state):
        """`train_step`'s observer: at one of `steps`, its row of `acc` is filled."""
        at = jnp.asarray(self.steps, jnp.int32)
        i = jnp.minimum(jnp.searchsorted(at, step), len(self.steps) - 1)

        def fill():
            new = self.counts(grads, opt_state)
            return jax.tree_util.tree_map(lambda a, c: a.at[i].set(c), acc, new)

        return jax.lax.cond(at[i] == step, fill, lambda: acc)

    def collect(self, sigma_counts: dict, acc, taken) -> None:
        """Appends to `sigma_counts` (tensor path -> counts per step) the histograms of
        those of `steps` among the steps `taken`, from a chunk's `acc`."""
        rows = [i for i, s in enumerate(self.steps) if s in taken]
        if not rows:
            return
        acc = jax.device_get(acc)
        for path, c in zip(leaf_paths(acc), jax.tree_util.tree_leaves(acc), strict=True):
            sigma_counts.setdefault(path, []).extend(np.asarray(c)[rows].tolist())


def _slug(text: str) -> str:
    """A file-name form of a label; an exponent's sign is kept ("1e+06" -> "1e6", "1e-06"
    stays), so that labels differing only there do not share a file."""
    text = re.sub(r"(\d)e\+0*(\d)", r"\1e\2", text)
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-") or "run"


def record_path(out_dir, task_name: str, label: str, seed: int) -> Path:
    """Where a run's record goes: `<out_dir>/<task>__<label slug>__seed<k>.json`."""
    return Path(out_dir) / f"{task_name}__{_slug(label)}__seed{seed}.json"


def existing_record_path(out_dir, task_name: str, label: str, seed: int) -> Path:
    """The run's record in `out_dir`: at `record_path`, or where it was written before the
    bundled optimizer was named "small" (`records.legacy_label`) if only that file exists;
    `record_path` when neither does."""
    path = record_path(out_dir, task_name, label, seed)
    if not path.exists():
        old = record_path(out_dir, task_name, records.legacy_label(label), seed)
        if old.exists():
            return old
    return path


def _without_unset(spec):
    """`spec` without its None-valued options (`"clip": None` is no clip, as is no key)."""
    if isinstance(spec, dict):
        return {k: _without_unset(v) for k, v in spec.items() if v is not None}
    return spec


def same_run(
    record: dict,
    task_name: str,
    spec: dict,
    seed: int,
    num_steps: int,
    size: str | None = None,
    num_evals: int | None = None,
) -> bool:
    """Whether `record` is the run (task and size, optimizer spec, seed, steps, and with
    `num_evals` its evaluation steps) asked for."""
    return (
        record["task"]["name"] == task_name
        and (size is None or record["task"].get("size") == size)
        and _without_unset(record["optimizer"]["spec"]) == _without_unset(spec)
        and record["seed"] == seed
        and record["num_steps"] == num_steps
        and (num_evals is None or record["eval"]["step"] == evaluation_steps(num_steps, num_evals))
    )


def train_and_record(
    task: Task | str,
    spec: dict,
    *,
    num_steps: int | None = None,
    seed: int = 0,
    num_evals: int = DEFAULT_EVALS,
    out_dir=".",
    path=None,
    overwrite: bool = False,
    reuse: bool = False,
    command: str | None = None,
    log=print,
    resume: bool = False,
) -> Path:
    """Trains `spec` on `task`, writes its record and returns the record's path.

    `num_evals`: untimed evaluations after step 0 (`train`; fewer change only the record's
    evaluations, not the training). An existing record at the path is an error unless
    `overwrite` (replace it) or `reuse` and it records this very run, evaluated at the
    same steps (then it is kept and returned).
    `resume`: the run saves its state at every evaluation in
    `<out_dir>/.checkpoints/<record name>/` and, started again, continues from the newest
    one; the folder is removed once the record is written.
    """
    _git_at_start()
    task = get_task(task) if isinstance(task, str) else task
    num_steps = positive_int("num_steps", task.num_steps if num_steps is None else num_steps)
    num_evals = positive_int("num_evals", num_evals)
    # the run takes exactly num_steps steps: no learned optimizer can run past its budget,
    # and without that warning's host callback the programs can be cached on disk
    built = optimizers.build(spec, num_steps, warn_past_budget=False)
    if path is None:
        path = existing_record_path(out_dir, task.name, built.label, seed)
    path = Path(path)

    def reusable(existing: dict) -> bool:  # the record at `path` is this run's, and may stand
        return reuse and same_run(
            existing, task.name, built.spec, seed, num_steps, task.size, num_evals
        )

    if path.exists() and not overwrite:
        existing = records.read(path)
        if reusable(existing):
            log(f"  reusing {path} (same task, optimizer, seed and steps; --overwrite reruns)")
            return path
        raise FileExistsError(
            f"record {path} already exists (for {existing['optimizer']['label']}, seed "
            f"{existing['seed']}, {existing['num_steps']} steps, evaluated at "
            f"{len(existing['eval']['step'])} steps); refusing to overwrite it: "
            "pass --overwrite or choose another --out"
        )
    checkpoints = path.parent / ".checkpoints" / path.stem if resume else None
    if checkpoints is not None and checkpoints.is_dir():
        log(f"  resuming from {checkpoints}")
    result = train(
        task,
        built,
        num_steps=num_steps,
        seed=seed,
        num_evals=num_evals,
        checkpoint_dir=checkpoints,
    )
    result.pop("_final_state")
    record = {
        "schema": records.SCHEMA,
        "task": {
            "name": task.name,
            "size": task.size,
            "num_steps": task.num_steps,
            "metric": task.metric,
            "metric_split": task.metric_split,
            "higher_is_better": task.higher_is_better,
            "description": task.description,
        },
        "optimizer": {"label": built.label, "spec": built.spec, "learned": built.learned},
        "seed": int(seed),
        "hyperparameters": optimizers.hyperparameters(built.spec),
        **result,
        "meta": metadata(command),
    }
    try:
        records.write(record, path, overwrite=overwrite)
    except FileExistsError:
        # another process (a second sweep on the same folder) finished the same run
        # first: its record stands, and this one is the same run; a different run there
        # is still an error
        existing = records.read(path)
        if not reusable(existing):
            raise
        log(f"  {path} was written by another process for the same run; keeping that one")
        record = existing
    if checkpoints is not None:  # the record holds the run now
        shutil.rmtree(checkpoints, ignore_errors=True)
        if checkpoints.parent.is_dir() and not any(checkpoints.parent.iterdir()):
            shutil.rmtree(checkpoints.parent, ignore_errors=True)
    log(
        f"  {built.label:<45s} seed {seed}: best {record['best_loss']:.4g}  final "
        f"{record['final_loss']:.4g}  ({record['timing']['step_time_s'] * 1e6:.1f} µs/step) "
        f"-> {path}"
    )
    return path


# --------------------------------------------------------------------------- CLI: hubopt run


def _cli_positive_int(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _cli_seed(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"a seed is a non-negative integer, got {text!r}"
        ) from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"a seed is a non-negative integer, got {value}")
    return value


def add_arguments(parser) -> None:
    from hubopt.bench.spec_language import __doc__ as spec_doc
    from hubopt.tasks import SIZES, task_names

    parser.description = (
        "Train one optimizer on one task and write one JSON record per seed.\n\n"
        "Optimizer specs (--opt):\n\n" + spec_doc.split("\n\n", 1)[1].split("\n`parse(")[0]
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("task", help=f"one of: {', '.join(task_names())}")
    parser.add_argument(
        "--opt",
        required=True,
        metavar="SPEC",
        help="the optimizer, e.g. preset, adam,lr=3e-4, small, hub:adam+small,clip=0.05:0.5 "
        "(see above)",
    )
    parser.add_argument(
        "--size",
        choices=SIZES,
        default="cpu",
        help="task size (default: cpu; tiny for a smoke run)",
    )
    parser.add_argument(
        "--steps",
        type=_cli_positive_int,
        help="number of steps (default: the task's budget); the preset's warm-up and decay "
        "steps scale with it",
    )
    parser.add_argument(
        "--seed", "--seeds", dest="seeds", type=_cli_seed, nargs="+", default=[0], metavar="N"
    )
    parser.add_argument("--out", default="runs", help="folder for the records (default: runs)")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace existing records of the same runs"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="save the run's state at every evaluation (OUT/.checkpoints/) and, run again "
        "after a crash, continue from the newest one",
    )
    from hubopt._src.compile_cache import add_no_compile_cache_argument

    add_no_compile_cache_argument(parser)


def spec_from_args(args, task: Task) -> dict:
    """The optimizer spec dict `--opt` names (`preset` and bare hand names: the task's own
    settings), parsed once by `hubopt.bench.spec_language`."""
    from hubopt.bench import spec_language

    return spec_language.parse(args.opt, task).to_dict()


def run(args) -> int:
    """`hubopt run`: one record per seed."""
    try:
        task = get_task(args.task, size=args.size)
        if args.steps is not None:  # the preset's schedule laid over the steps asked for
            task = task.with_budget(args.steps)
        spec = spec_from_args(args, task)
    except ValueError as e:
        print(f"hubopt run: error: {e}", file=sys.stderr)
        return 2
    if not args.no_compile_cache:
        from hubopt._src.compile_cache import enable_compile_cache

        enable_compile_cache()
    try:
        for seed in args.seeds:
            train_and_record(
                task,
                spec,
                num_steps=args.steps,
                seed=seed,
                out_dir=args.out,
                overwrite=args.overwrite,
                command=getattr(args, "command_line", None),
                resume=args.resume,
            )
    except (FileExistsError, ValueError, records.RecordError) as e:
        print(f"hubopt run: error: {e}", file=sys.stderr)
        return 1
    return 0
