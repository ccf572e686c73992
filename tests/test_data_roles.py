"""Data roles (issue 12): meta-train, meta-validation and test data never mix.

`task_distribution.DATA_ROLES` names each data source's role; meta-training refuses
anything but meta-train data, and no row of a test data set reaches what a meta-training
run's estimators read (checked on the arrays themselves, not on names)."""

import numpy as np
import pytest

from hubopt.learned.meta import task_distribution as td
from hubopt.learned.meta.train import MetaTrainConfig


def _rows(arrays) -> set[bytes]:
    """Every row of every 2-D float array in `arrays`, as bytes (rounded to 1e-4 so that
    float noise of the same standardisation cannot hide a copy)."""
    out = set()
    for x in arrays:
        x = np.asarray(x, np.float32)
        if x.ndim == 2:
            out |= {r.tobytes() for r in np.round(x, 4)}
    return out


def test_every_data_source_has_one_of_the_three_roles():
    assert {t.dataset for t in td.ALL_TASKS} <= set(td.DATA_ROLES)
    assert {role for role, _ in td.DATA_ROLES.values()} <= set(td.ROLES)
    assert all(td.data_role(t) == "meta-train" for t in td.TRAIN_TASKS + td.TINY_TASKS)


@pytest.mark.parametrize("task", td.RETIRED_TASKS + td.HELDOUT_OTHER_DATA, ids=lambda t: t.name)
def test_meta_training_refuses_data_of_other_roles(task):
    role = td.data_role(task)
    assert role != "meta-train"
    with pytest.raises(ValueError, match=f"reads {task.dataset} data, whose role is '{role}'"):
        MetaTrainConfig(tasks=(td.TRAIN_TASKS[0].name, task.name))


def test_no_row_of_other_roles_reaches_the_default_meta_training_run():
    """What the default run's estimators read (each task's base data: training split and
    held-out term) shares no row with the data of the other roles."""
    config = MetaTrainConfig()
    seen = set()
    for estimator in config.estimators():
        seen |= _rows(estimator.unroll.task.base_data().values())
    assert seen, "the default run reads no data set"
    for source, (role, _) in td.DATA_ROLES.items():
        if role == "meta-train":
            continue
        other = next(t for t in td.ALL_TASKS if t.dataset == source)
        rows = _rows(other.base_data().values())
        assert rows and not rows & seen, source
