"""The optional Ray executor: a clear error without Ray; with Ray, one worker
reproduces the local executor exactly; two workers train and resume bit for bit."""

import sys

import jax
import numpy as np
import pytest
from test_meta_train import TINY  # tests/ is on sys.path under pytest

from hubopt.learned.meta import ray_executor
from hubopt.learned.meta.train import MetaTrainConfig, meta_train


def _flat(tree):
    return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree_util.tree_leaves(tree)])


def test_split_pairs():
    assert ray_executor.split_pairs(8, 3) == [3, 3, 2]
    assert sum(ray_executor.split_pairs(17, 4)) == 17
    with pytest.raises(ValueError, match="num_workers"):
        ray_executor.split_pairs(2, 3)


def test_clear_error_without_ray(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail
    with pytest.raises(ImportError, match="pip install ray"):
        ray_executor.RayExecutor(MetaTrainConfig(**TINY), num_workers=2)


def test_ray_one_worker_equals_local_and_two_workers_resume_bit_for_bit(tmp_path):
    """On a real local Ray (the ray extra; make test installs it, so this never skips):
    one worker reproduces the local executor exactly; two workers (their particles
    split and averaged) train, and a run stopped after one outer step and resumed
    equals the uninterrupted run. Three actors in all: starting one dominates."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        cfg = MetaTrainConfig(outer_steps=2, **TINY)
        local = meta_train(cfg, tmp_path / "local", progress=False)
        one = meta_train(
            cfg,
            tmp_path / "ray1",
            progress=False,
            executor=ray_executor.RayExecutor(cfg, num_workers=1),
        )
        np.testing.assert_array_equal(_flat(local.theta), _flat(one.theta))
        two_workers = ray_executor.RayExecutor(cfg, num_workers=2)  # reused by every run
        whole = meta_train(cfg, tmp_path / "whole", progress=False, executor=two_workers)
        assert whole.step == 2 and np.isfinite(_flat(whole.theta)).all()
        assert not np.array_equal(_flat(whole.theta), _flat(local.theta))  # other particles
        first = MetaTrainConfig(outer_steps=1, **TINY)  # its checkpoint: at its last step
        meta_train(first, tmp_path / "resumed", progress=False, executor=two_workers)
        resumed = meta_train(cfg, tmp_path / "resumed", progress=False, executor=two_workers)
        assert resumed.step == 2
        np.testing.assert_array_equal(_flat(resumed.theta), _flat(whole.theta))
    finally:
        ray.shutdown()
