"""The optional Ray executor: a clear error without Ray; with Ray, one worker
reproduces the local executor exactly and several workers train and resume."""

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


@pytest.mark.skipif(
    __import__("importlib").util.find_spec("ray") is None
    or __import__("os").environ.get("HUBOPT_TEST_RAY") != "1",
    reason="needs Ray and HUBOPT_TEST_RAY=1 (starting Ray workers takes minutes)",
)
def test_ray_one_worker_equals_local_and_two_workers_resume(tmp_path):
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
        two = meta_train(
            cfg,
            tmp_path / "ray2",
            progress=False,
            executor=ray_executor.RayExecutor(cfg, num_workers=2),
        )
        assert np.isfinite(_flat(two.theta)).all()
        cfg3 = MetaTrainConfig(outer_steps=3, **TINY)
        three = meta_train(
            cfg3,
            tmp_path / "ray2",
            progress=False,
            executor=ray_executor.RayExecutor(cfg3, num_workers=2),
        )
        assert three.step == 3 and np.isfinite(_flat(three.theta)).all()
    finally:
        ray.shutdown()
