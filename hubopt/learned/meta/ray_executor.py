"""An optional Ray executor: the particles of every task spread over Ray workers.

    from hubopt.learned.meta.ray_executor import RayExecutor
    meta_train(config, out, executor=RayExecutor(config, num_workers=4))
    # or: hubopt meta-train --out runs/x --executor ray --ray-workers 4

Worker w holds its own share of each task's particles (a `LocalExecutor`
whose estimators have `num_pairs_w` pairs, Σ_w num_pairs_w = num_pairs) and
persists their inner states between outer steps; an outer step sends θ to
every worker at once and averages their estimates weighted by their pairs.
Per-task normalisation (`normalize="std"`) then uses each worker's own
particles. Ray is not a dependency of hubopt: install it (`pip install ray`)
to use this module.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np


def _import_ray():
    try:
        import ray
    except ImportError as e:
        raise ImportError(
            "the Ray executor needs Ray, which hubopt does not install: `pip install ray` "
            "(or use the default local executor)"
        ) from e
    return ray


def split_pairs(num_pairs: int, num_workers: int) -> list[int]:
    """Pairs per worker, as even as possible; every worker gets at least one."""
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    if num_workers > num_pairs:
        raise ValueError(f"num_workers ({num_workers}) must not exceed num_pairs ({num_pairs})")
    q, r = divmod(num_pairs, num_workers)
    return [q + (1 if w < r else 0) for w in range(num_workers)]


class _Worker:
    """The body of one Ray actor: a LocalExecutor over its share of particles."""

    def __init__(self, config_json: dict, num_pairs: int, worker_index: int, num_workers: int):
        from hubopt.learned.meta.train import LocalExecutor, MetaTrainConfig

        cfg = MetaTrainConfig.from_json(config_json)
        cfg = dataclasses.replace(cfg, num_pairs=num_pairs)
        self.index = worker_index
        # a lone worker uses the caller's keys unchanged: it then equals LocalExecutor
        self.fold = num_workers > 1
        self.local = LocalExecutor(cfg.estimators())

    def init(self, theta, key):
        self.local.init(theta, self._key(key))
        return True

    def step(self, theta, task_ids, keys):
        keys = [self._key(k) for k in keys]
        out = self.local.step(theta, task_ids, keys)
        return [(jax.device_get(g), {k: float(v) for k, v in m.items()}) for g, m in out]

    def get_state(self):
        return jax.device_get(self.local.get_state())

    def set_state(self, states):
        self.local.set_state(states)
        return True

    def state_templates(self, theta, key):
        return self.local.state_templates(theta, self._key(key))

    def _key(self, key):
        return jax.random.fold_in(key, self.index) if self.fold else key


class RayExecutor:
    """Spreads each task's particles over `num_workers` Ray actors (see module doc)."""

    def __init__(self, config, num_workers: int = 2, *, ray_init_kwargs: dict | None = None):
        ray = _import_ray()
        self.pairs = split_pairs(config.num_pairs, num_workers)
        if not ray.is_initialized():
            ray.init(**(ray_init_kwargs or {}))
        actor = ray.remote(num_cpus=1)(_Worker)
        self._ray = ray
        self.workers = [
            actor.remote(config.to_json(), n, w, len(self.pairs)) for w, n in enumerate(self.pairs)
        ]

    def _get(self, refs):
        return self._ray.get(refs)

    def init(self, theta, key) -> None:
        self._get([w.init.remote(theta, key) for w in self.workers])

    def step(self, theta, task_ids, keys) -> list[tuple[Any, dict]]:
        theta = jax.device_get(theta)
        per_worker = self._get([w.step.remote(theta, task_ids, keys) for w in self.workers])
        weights = np.asarray(self.pairs, np.float64) / sum(self.pairs)
        out = []
        for j in range(len(task_ids)):
            grads = [res[j][0] for res in per_worker]
            g = jax.tree_util.tree_map(
                lambda *xs: np.asarray(
                    sum(wt * x for wt, x in zip(weights, xs, strict=True)), np.float32
                ),
                *grads,
            )
            metrics = {
                k: float(
                    sum(wt * res[j][1][k] for wt, res in zip(weights, per_worker, strict=True))
                )
                for k in per_worker[0][j][1]
            }
            out.append((g, metrics))
        return out

    def get_state(self) -> list[Any]:
        """Per task, a tuple of the workers' particle states."""
        states = self._get([w.get_state.remote() for w in self.workers])
        return [tuple(s[i] for s in states) for i in range(len(states[0]))]

    def set_state(self, states: list[Any]) -> None:
        per_worker = [[task_states[w] for task_states in states] for w in range(len(self.workers))]
        self._get([w.set_state.remote(s) for w, s in zip(self.workers, per_worker, strict=True)])

    def state_templates(self, theta, key) -> list[Any]:
        t = self._get([w.state_templates.remote(theta, key) for w in self.workers])
        return [tuple(tw[i] for tw in t) for i in range(len(t[0]))]
