r"""The outer loop: meta-train `MLPLOpt`'s θ with (P)ES and Adam.

Each outer step takes `tasks_per_step` tasks of the distribution in turn
(round robin), asks the executor for each task's meta-gradient estimate (one
antithetic truncation of every particle; normalised per task, see
`estimators`), averages them and applies

    θ ← θ − Adam(clip_by_global_norm(ĝ, clip_norm), meta_lr).

Records in `out_dir` (all written atomically: temp file + rename):

    config.json       the configuration (a resume must match it, except outer_steps)
    checkpoint.msgpack θ, the Adam state, the particles' inner states and the RNG
                      key, every `checkpoint_every` outer steps and at the end
    theta.msgpack     θ alone (what `small` ships), same cadence
    log.jsonl         one line per outer step: step, task names, meta-losses
    thetas/theta_<step>.msgpack   θ every `snapshot_every` outer steps (when > 0): the
                      candidates that checkpoint selection on meta-validation tasks picks from

A run stopped at any point resumes from its last checkpoint and continues
exactly as the uninterrupted run would (same θ bit for bit on one machine).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from hubopt._src.atomic_write import write_atomic
from hubopt.learned.checkpoint import read_checkpoint, write_checkpoint
from hubopt.learned.meta import task_distribution as td
from hubopt.learned.meta.estimators import PES, Unroll
from hubopt.learned.small_lopt.architecture import MLPLOpt, momentum_set

ESTIMATORS = ("pes", "es")


@dataclasses.dataclass(frozen=True)
class MetaTrainConfig:
    """Everything that defines a meta-training run (defaults: the bundled "small").

    estimator: "pes" (persistent) or "es" (truncated antithetic ES).
    tasks: names from `task_distribution` (default: `TRAIN_TASKS`).
    """

    tasks: tuple[str, ...] = tuple(t.name for t in td.TRAIN_TASKS)
    estimator: str = "pes"
    outer_steps: int = 5400
    tasks_per_step: int = 2
    num_pairs: int = 16
    sigma: float = 0.02
    meta_lr: float = 2e-3
    clip_norm: float = 1.0
    trunc_len: int = 50
    horizons: tuple[int, ...] = (200, 500, 1000, 2000)
    eval_weight: float = 1.0
    train_floor: float = 9.2
    hidden: tuple[int, ...] = (32,)
    relative_correction: bool = False
    factored_features: bool = True
    step_decay: str = "none"
    anchor_floor: bool = False
    momenta: int = 3
    hub: str | None = None
    hub_mode: str = "default"
    seed: int = 0
    checkpoint_every: int = 50
    snapshot_every: int = 0

    def __post_init__(self):
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {self.estimator!r}")
        if not self.tasks:
            raise ValueError("tasks must name at least one task")
        for name in self.tasks:
            task = td.by_name(name)
            if td.data_role(task) != "meta-train":
                raise ValueError(
                    f"task {name} reads {task.dataset} data, whose role is "
                    f"{td.data_role(task)!r} (task_distribution.DATA_ROLES): meta-training "
                    "may only use meta-train data"
                )
        if not 1 <= self.tasks_per_step <= len(self.tasks):
            raise ValueError(
                f"tasks_per_step must be in [1, {len(self.tasks)}], got {self.tasks_per_step}"
            )
        for name in ("outer_steps", "num_pairs", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.snapshot_every < 0:
            raise ValueError(f"snapshot_every must be >= 0, got {self.snapshot_every}")
        if self.meta_lr <= 0 or self.clip_norm <= 0 or self.sigma <= 0:
            raise ValueError("meta_lr, clip_norm and sigma must be > 0")
        self.lopt()  # a bad architecture (hidden sizes, step decay) fails here, named

    def to_json(self) -> dict:
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_json(cls, d: dict) -> MetaTrainConfig:
        d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**d)

    def lopt(self) -> MLPLOpt:
        return MLPLOpt(
            hidden_sizes=self.hidden,
            relative_correction=self.relative_correction,
            factored_features=self.factored_features,
            step_decay=self.step_decay,
            anchor_floor=self.anchor_floor,
            **momentum_set(self.momenta),
        )

    def estimators(self) -> list[PES]:
        out = []
        for name in self.tasks:
            unroll = Unroll(
                td.by_name(name),
                self.lopt(),
                trunc_len=self.trunc_len,
                horizons=self.horizons,
                eval_weight=self.eval_weight,
                floor=self.train_floor,
                hub_hand=self.hub,
                hub_mode=self.hub_mode,
            )
            out.append(
                PES(
                    unroll,
                    num_pairs=self.num_pairs,
                    sigma=self.sigma,
                    persistent=self.estimator == "pes",
                )
            )
        return out


# ------------------------------------------------------------------ executors


@functools.lru_cache(maxsize=64)
def _jitted(pes: PES):
    """Compiled (init, step) of one estimator, shared by every executor in this process."""
    return jax.jit(pes.init), jax.jit(pes.step)


class LocalExecutor:
    """Runs every task's estimator in this process (jitted, one compile per task)."""

    def __init__(self, estimators: list[PES]):
        self.estimators = estimators
        self.bases = [
            jax.tree_util.tree_map(jnp.asarray, e.unroll.task.base_data()) for e in estimators
        ]
        self._inits = [_jitted(e)[0] for e in estimators]
        self._steps = [_jitted(e)[1] for e in estimators]
        self.states: list[Any] = []

    def init(self, theta, key) -> None:
        keys = jax.random.split(key, len(self.estimators))
        self.states = [
            f(theta, k, b) for f, k, b in zip(self._inits, keys, self.bases, strict=True)
        ]

    def step(self, theta, task_ids: list[int], keys) -> list[tuple[Any, dict]]:
        out = []
        for i, k in zip(task_ids, keys, strict=True):
            g, self.states[i], m = self._steps[i](theta, self.states[i], k, self.bases[i])
            out.append((g, m))
        return out

    def get_state(self) -> list[Any]:
        return self.states

    def set_state(self, states: list[Any]) -> None:
        self.states = list(states)

    def state_templates(self, theta, key) -> list[Any]:
        keys = jax.random.split(key, len(self.estimators))
        return [
            jax.eval_shape(f, theta, k, b)
            for f, k, b in zip(self._inits, keys, self.bases, strict=True)
        ]


# ------------------------------------------------------------------ records


def _leaves_dict(tree) -> dict[str, np.ndarray]:
    return {f"{i:05d}": np.asarray(x) for i, x in enumerate(jax.tree_util.tree_leaves(tree))}


def _from_leaves_dict(template, d: dict) -> Any:
    leaves, tdef = jax.tree_util.tree_flatten(template)
    if len(d) != len(leaves):
        raise ValueError(f"checkpoint has {len(d)} leaves where {len(leaves)} were expected")
    return tdef.unflatten([jnp.asarray(d[f"{i:05d}"]) for i in range(len(leaves))])


@dataclasses.dataclass
class MetaTrainResult:
    theta: dict
    step: int
    log: list[dict]
    wall_s: float


def meta_train(
    config: MetaTrainConfig,
    out_dir: str | os.PathLike,
    *,
    resume: bool = True,
    executor=None,
    progress: bool = True,
    time_limit_s: float | None = None,
) -> MetaTrainResult:
    """Runs (or resumes) meta-training until `config.outer_steps` or `time_limit_s`.

    `executor` defaults to `LocalExecutor(config.estimators())`; a
    `ray_executor.RayExecutor` spreads the particles over Ray workers.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg_path, ckpt_path = out / "config.json", out / "checkpoint.msgpack"
    log_path, theta_path = out / "log.jsonl", out / "theta.msgpack"

    executor = executor if executor is not None else LocalExecutor(config.estimators())
    lopt = config.lopt()
    meta_opt = optax.chain(optax.clip_by_global_norm(config.clip_norm), optax.adam(config.meta_lr))
    key = jax.random.PRNGKey(config.seed)
    k_theta, k_particles, key = jax.random.split(key, 3)
    theta = lopt.init(k_theta)
    opt_state = meta_opt.init(theta)
    step, log = 0, []

    if resume and ckpt_path.exists():
        stored = MetaTrainConfig.from_json(json.loads(cfg_path.read_text()))
        if dataclasses.replace(stored, outer_steps=config.outer_steps) != config:
            raise ValueError(
                f"{out} holds a run with another configuration ({cfg_path}); "
                "use another out_dir or resume=False"
            )
        ck = read_checkpoint(ckpt_path)
        p = ck["params"]
        theta = _from_leaves_dict(theta, p["theta"])
        opt_state = _from_leaves_dict(opt_state, p["meta_opt"])
        key = jnp.asarray(p["key"], jnp.uint32)
        templates = executor.state_templates(theta, k_particles)
        executor.set_state(
            [_from_leaves_dict(t, p["particles"][f"{i:03d}"]) for i, t in enumerate(templates)]
        )
        step = int(ck["step"])
        if log_path.exists():
            log = [json.loads(s) for s in log_path.read_text().splitlines() if s.strip()]
            log = [r for r in log if r["step"] < step]
    else:
        executor.init(theta, k_particles)
        log = []
    write_atomic(cfg_path, json.dumps(config.to_json(), indent=1) + "\n")

    @jax.jit
    def apply(theta, opt_state, grads):
        g = jax.tree_util.tree_map(lambda *x: sum(x) / len(x), *grads)
        upd, opt_state = meta_opt.update(g, opt_state, theta)
        return optax.apply_updates(theta, upd), opt_state, optax.tree.norm(g)

    def save(step):
        payload = {
            "theta": _leaves_dict(theta),
            "meta_opt": _leaves_dict(opt_state),
            "key": np.asarray(key),
            "particles": {f"{i:03d}": _leaves_dict(s) for i, s in enumerate(executor.get_state())},
        }
        write_checkpoint(ckpt_path, payload, gen_id=lopt.gen_id, step=step)
        write_checkpoint(
            theta_path, jax.tree_util.tree_map(np.asarray, theta), gen_id=lopt.gen_id, step=step
        )
        write_atomic(log_path, "".join(json.dumps(r) + "\n" for r in log))
        if config.snapshot_every and step % config.snapshot_every == 0:
            (out / "thetas").mkdir(exist_ok=True)
            write_checkpoint(
                out / "thetas" / f"theta_{step:06d}.msgpack",
                jax.tree_util.tree_map(np.asarray, theta),
                gen_id=lopt.gen_id,
                step=step,
            )

    n_tasks = len(config.tasks)
    t0 = time.time()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.outer_steps, initial=step, desc="meta-train", unit="step")
    ema = None
    while step < config.outer_steps:
        if time_limit_s is not None and time.time() - t0 > time_limit_s:
            break
        ids = [(step * config.tasks_per_step + j) % n_tasks for j in range(config.tasks_per_step)]
        key, sub = jax.random.split(key)
        results = executor.step(theta, ids, list(jax.random.split(sub, len(ids))))
        theta, opt_state, gnorm = apply(theta, opt_state, [g for g, _ in results])
        rec = {
            "step": step,
            "tasks": [config.tasks[i] for i in ids],
            "meta_loss": [float(m["meta_loss"]) for _, m in results],
            "diverged": [float(m["diverged"]) for _, m in results],
            "grad_norm": float(gnorm),
        }
        log.append(rec)
        step += 1
        mean_loss = float(np.mean(rec["meta_loss"]))
        ema = mean_loss if ema is None else 0.98 * ema + 0.02 * mean_loss
        if bar is not None:
            bar.update(1)
            bar.set_postfix(meta_loss=f"{ema:.3f}")
        snapshot = config.snapshot_every and step % config.snapshot_every == 0
        if step % config.checkpoint_every == 0 or step == config.outer_steps or snapshot:
            save(step)
    if bar is not None:
        bar.close()
    if step % config.checkpoint_every != 0 and step != config.outer_steps:
        save(step)  # stopped by the time limit
    if not math.isfinite(float(optax.tree.norm(theta))):
        raise FloatingPointError("meta-training produced a non-finite theta")
    return MetaTrainResult(theta=theta, step=step, log=log, wall_s=time.time() - t0)
