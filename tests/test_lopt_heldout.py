"""The learned optimizer's held-out tasks (hubopt.tasks.lopt_heldout) and the `lopt` preset."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hubopt.bench import optimizers, report, runner, scoring, sweep
from hubopt.learned.meta import task_distribution as td
from hubopt.tasks import Task, get_task, lopt_heldout, task_names


def test_every_held_out_task_is_registered_and_none_is_meta_trained_on():
    assert set(lopt_heldout.NAMES) <= set(task_names())
    trained = {t.name for t in td.TRAIN_TASKS}
    assert not trained & set(lopt_heldout.NAMES)
    kinds = {kind for _meta, kind in lopt_heldout.KINDS.values()}
    assert kinds == {
        "in_distribution",
        "out_of_distribution",
        "other_data_set",
        "fine_tuning",
        "test",
    }
    assert set(lopt_heldout.TEST_NAMES) | set(lopt_heldout.VALIDATION_NAMES) == set(
        lopt_heldout.NAMES
    )
    assert not set(lopt_heldout.TEST_NAMES) & set(lopt_heldout.VALIDATION_NAMES)


def test_the_test_set_is_test_data_with_architectures_no_other_task_has():
    def arch(t):
        return (t.model, t.hidden, t.activation)

    others = [t for t in td.ALL_TASKS if t not in td.TEST_TASKS] + [lopt_heldout.FINETUNE]
    for t in td.TEST_TASKS:
        assert td.data_role(t) == "test", t.name
        assert arch(t) not in {arch(o) for o in others}, t.name
        assert "test" in get_task(t.name, "tiny").splits


def test_data_roles_no_test_split_where_meta_training_saw_the_held_out_images():
    for name in lopt_heldout.NAMES:
        task = get_task(name, "tiny")
        assert task.metric == "loss" and task.metric_split == "train" and task.stochastic
        meta = lopt_heldout.KINDS[name][0]
        # only test data has test rows (a regression instance's test points are fresh
        # draws of a fixed teacher: the next test)
        has_test = td.data_role(meta) == "test" or not meta.classification
        assert ("test" in task.splits) is has_test, name


@pytest.mark.parametrize(
    ("name", "valid", "test"),
    [
        ("wine_mlp16tanhb16", 30, 30),
        ("mnist14_mlp96x48relub64", 500, 500),
        ("fmnist14_mlp128gelub64", 1000, 2000),
    ],
)
def test_valid_and_test_rows_are_disjoint_from_each_other_and_from_training(name, valid, test):
    data = lopt_heldout._split_data(td.by_name(name))
    rows = {split: {x.tobytes() for x in np.asarray(data[split][0])} for split in data}
    assert (len(rows["valid"]), len(rows["test"])) == (valid, test)
    assert not rows["valid"] & rows["test"] and not rows["train"] & (rows["valid"] | rows["test"])


def test_regression_test_points_are_fresh_draws_of_the_same_teacher():
    meta = td.by_name("synreg_mlp48gelub32")
    key = jax.random.PRNGKey(lopt_heldout.INSTANCE_SEED)
    data = meta.instance_data(key, {})
    # the held-out points meta-training-style instances draw are the teacher at their inputs
    x_te, y_te = meta.regression_points(key, jax.random.split(key, 4)[2], 512)
    np.testing.assert_array_equal(x_te, data["x_te"])
    np.testing.assert_allclose(y_te, data["y_te"], rtol=1e-6)
    x_test, _ = lopt_heldout._split_data(meta)["test"]
    assert not np.allclose(x_test, data["x_te"])
    with pytest.raises(ValueError, match="no teacher"):
        td.by_name("digits_mlp48relub64").regression_points(key, key, 4)


def test_finetune_task_starts_from_the_pretrained_backbone_with_a_new_head():
    task = get_task("digits59_finetune_mlp64x64relu", "tiny")
    a, b = task.init(jax.random.key(0)), task.init(jax.random.key(1))
    for layer in ("layer0", "layer1"):  # the same pretrained weights for every seed
        np.testing.assert_array_equal(a[layer]["w"], b[layer]["w"])
    assert a["layer2"]["w"].shape == (64, 5) and not np.allclose(a["layer2"]["w"], b["layer2"]["w"])
    # pretrained on digits 0–4: its features separate them far better than a random net's
    d = td.load_digits_split()
    keep = d["y_tr"] < 5
    x, y = jnp.asarray(d["x_tr"][keep]), d["y_tr"][keep]

    def features(params):
        h = x
        for layer in ("layer0", "layer1"):
            h = jax.nn.relu(h @ params[layer]["w"] + params[layer]["b"][None])
        return np.asarray(h)

    def nearest_mean_accuracy(h):
        means = np.stack([h[y == c].mean(0) for c in range(5)])
        return np.mean(np.argmin(((h[:, None] - means[None]) ** 2).sum(-1), 1) == y)

    random = td.mlp_init(jax.random.PRNGKey(5), (64, 64, 64), 1.0)
    assert nearest_mean_accuracy(features(a)) > nearest_mean_accuracy(features(random)) + 0.02


def test_a_run_records_and_reports_the_final_loss_on_the_whole_training_split():
    task = get_task("synreg_mlp48gelub32", "tiny")
    built = optimizers.build({"name": "adam", "learning_rate": 1e-2}, task.num_steps)
    result = runner.train(task, built, num_steps=task.num_steps, seed=0)
    params = result.pop("_final_state")[0]
    x, y = lopt_heldout._split_data(td.by_name(task.name))["train"]
    out = td.mlp_apply(params, jnp.asarray(x), "gelu")
    by_hand = float(jnp.mean((out - jnp.asarray(y)) ** 2))
    assert set(result["metrics"]) == {"train", "valid", "test"}
    np.testing.assert_allclose(result["metrics"]["train"]["loss"], by_hand, rtol=1e-5)
    rec = {
        "task": {"name": task.name, "metric": "loss", "metric_split": "train"},
        "optimizer": {"label": "adam@0.01", "spec": built.spec},
        "seed": 0,
        **result,
    }
    (row,) = report.results([rec])
    assert row.split == "train" and row.values == (result["metrics"]["train"]["loss"],)
    # every evaluation logs the whole training split's loss: the spike ratio reads it
    train_losses = result["eval"]["train"]["loss"]
    assert len(train_losses) == len(result["eval"]["step"]) == runner.DEFAULT_EVALS + 1
    np.testing.assert_allclose(train_losses[-1], by_hand, rtol=1e-5)
    steps = result["eval"]["step"]
    assert row.spike == scoring.spike_ratio(steps, train_losses, train_losses[0], task.num_steps)
    assert report.SPIKE_HEADER in report.results_table([rec])


def test_metric_split_must_be_a_split_of_the_task():
    with pytest.raises(ValueError, match="metric_split must be one of its splits"):
        Task(
            name="toy_quadratic",
            init=lambda key: jnp.zeros(2),
            loss=lambda p, b: jnp.sum(p**2),
            num_steps=3,
            metrics_fn=lambda p, split: {"loss": jnp.sum(p**2)},
            splits=("valid", "test"),
            metric_split="train",
        )


def test_lopt_preset_is_every_held_out_task_with_the_tuned_baseline_and_hub_variants():
    points = sweep.preset_points("lopt", size="tiny", seeds=1)
    assert {p.task for p in points} == set(lopt_heldout.VALIDATION_NAMES)
    opts = {p.opt for p in points if p.task == "cancer_mlp32relub32"}
    rates = {1e-3, *(float(o.split("lr=")[1]) for o in opts if o.startswith("preset,lr="))}
    assert rates == set(lopt_heldout.LR_GRID)
    assert {"small", "hub:preset+small", "hub:preset+small,mode=inverted"} <= opts


def test_lopt_test_preset_is_the_test_set_with_tuned_adam_and_adamw():
    points = sweep.preset_points("lopt_test", size="tiny", seeds=2)
    assert {p.task for p in points} == set(lopt_heldout.TEST_NAMES)
    opts = {p.opt for p in points if p.task == "wine_mlp16tanhb16"}
    adam_rates = {1e-3, *(float(o.split("lr=")[1]) for o in opts if o.startswith("preset,lr="))}
    adamw_rates = {float(o.split("lr=")[1].split(",")[0]) for o in opts if o.startswith("adamw")}
    assert adam_rates == adamw_rates == set(lopt_heldout.LR_GRID)
    assert {"small", "hub:preset+small", "adam,lr=1e-3,schedule=constant"} <= opts
    assert {p.seed for p in points} == {0, 1}


def test_every_task_whose_test_data_meta_training_saw_is_declared():
    """A task with a test split drawn from a data set meta-training uses must be listed
    in SEEN_BY_META_TRAINING (so reports can say so); and the listing is true: the
    MNIST tasks' test images are among the images the bundled optimizer's MNIST task read."""
    from hubopt.learned.small_lopt import bundled
    from hubopt.tasks.data.mnist import mnist_subset
    from hubopt.tasks.image_classification import load_splits

    meta_sources = {td.by_name(t).dataset for t in bundled.provenance()["config"]["tasks"]}
    prefixes = {"digits": "digits", "mnist": "mnist", "mnist14": "mnist"}
    for name in task_names():
        source = prefixes.get(name.split("_")[0])
        if source in meta_sources and "test" in get_task(name, "tiny").splits:
            assert td.SEEN_BY_META_TRAINING.get(name) == source, name
    for name, source in td.SEEN_BY_META_TRAINING.items():
        assert source in meta_sources, name
    seen = {img.tobytes() for img in np.asarray(mnist_subset()[0], np.uint8)}
    test_images = np.asarray(load_splits("mnist")["test"].x, np.uint8)[..., 0]
    assert len(test_images) and all(img.tobytes() in seen for img in test_images)
