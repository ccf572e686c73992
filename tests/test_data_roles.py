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
    meta_train = td.TRAIN_TASKS + td.FEW_DATA_TASKS + td.TINY_TASKS
    assert all(td.data_role(t) == "meta-train" for t in meta_train)


@pytest.mark.parametrize("task", td.RETIRED_TASKS + td.HELDOUT_OTHER_DATA, ids=lambda t: t.name)
def test_meta_training_refuses_data_of_other_roles(task):
    role = td.data_role(task)
    assert role != "meta-train"
    with pytest.raises(ValueError, match=f"reads {task.dataset} data, whose role is '{role}'"):
        MetaTrainConfig(tasks=(td.TRAIN_TASKS[0].name, task.name))


@pytest.mark.parametrize("with_few_data", [False, True], ids=["default", "with_few_data_tasks"])
def test_no_row_of_other_roles_reaches_the_default_meta_training_run(with_few_data):
    """What the default run's estimators read (each task's base data: training split and
    held-out term) shares no row with the data of the other roles; nor does a run that
    adds the tiny-table tasks."""
    extra = tuple(t.name for t in td.FEW_DATA_TASKS) if with_few_data else ()
    config = MetaTrainConfig(tasks=tuple(t.name for t in td.TRAIN_TASKS) + extra)
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


def test_every_test_data_set_gives_its_tasks_a_test_split():
    """Test data is split into valid (choices) and test (reported numbers); a test data
    set without `n_valid` is refused by name rather than left without a test split."""
    from hubopt.tasks import lopt_heldout

    test_sets = [name for name, (role, _) in td.DATA_ROLES.items() if role == "test"]
    assert test_sets and all(td.DATASETS[name].n_valid for name in test_sets)
    for name in lopt_heldout.TEST_NAMES:
        task = lopt_heldout.make_task(name, "tiny")
        assert task.splits == ("train", "valid", "test"), name


def test_a_test_data_set_without_n_valid_is_refused(monkeypatch):
    from hubopt.tasks import lopt_heldout

    monkeypatch.setitem(td.DATASETS, "wine", td.DATASETS["wine"]._replace(n_valid=None))
    with pytest.raises(ValueError, match="wine is test data but its DataSet declares no n_valid"):
        lopt_heldout.make_task("wine_mlp16tanhb16", "tiny")


def test_the_tiny_table_is_cut_from_digits_training_rows():
    """digits_few: the first 120 of digits' training images with their labels, and
    digits' held-out images unchanged: no row digits' meta-training would not read."""
    full, few = td.load_digits_split(), td.load_digits_few_split()
    assert few["x_tr"].shape == (td.DIGITS_FEW_TRAIN, 64)
    np.testing.assert_array_equal(few["x_tr"], full["x_tr"][: td.DIGITS_FEW_TRAIN])
    np.testing.assert_array_equal(few["y_tr"], full["y_tr"][: td.DIGITS_FEW_TRAIN])
    np.testing.assert_array_equal(few["x_te"], full["x_te"])
    assert len(set(few["y_tr"].tolist())) == 10  # every class is in the tiny table
