"""The fine-tuning task (`hubopt.tasks.finetune`): an ImageNet MobileNetV2 with a new head on
Fashion-MNIST. Training at the tiny size, splits, images, parameter groups, the scratch variant."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hubopt
from hubopt.tasks import finetune, get_task
from hubopt.tasks.data.idx import fashion_mnist
from hubopt.tasks.data.torch_checkpoint import load_state_dict
from hubopt.tasks.models import mobilenet


@pytest.fixture(scope="module")
def task():
    return get_task("fmnist_mobilenet_finetune", "tiny")


@pytest.fixture(scope="module")
def params(task):
    return task.init(jax.random.key(0))


@pytest.fixture(scope="module")
def trained(task, params):
    """20 steps of the task's hand optimizer at its grid's largest rate (1e-3; the preset's
    1e-4 barely moves a new head in 20 steps), in a `lax.scan` as the runner trains."""
    from hubopt.baselines.presets import from_spec

    tx = from_spec({**task.hand, "learning_rate": max(task.lr_grid)}, task.num_steps)

    def step(carry, i):
        p, s = carry
        value, grads = jax.value_and_grad(task.loss)(p, task.batch(jax.random.key(i), i))
        updates, s = tx.update(grads, s, p)
        return (optax.apply_updates(p, updates), s), value

    run = jax.jit(lambda p: jax.lax.scan(step, (p, tx.init(p)), jnp.arange(task.num_steps)))
    (final, _), losses = run(params)
    return final, np.asarray(losses)


def test_the_task_is_registered_as_the_contract_asks(task):
    assert task.name == "fmnist_mobilenet_finetune" and task.size == "tiny"
    assert task.metric == "accuracy" and task.higher_is_better
    assert task.splits == ("train", "valid", "test")
    assert task.hand == {
        "name": "adamw",
        "learning_rate": 1e-4,
        "schedule": "warmup_cosine",
        "warmup_steps": task.num_steps // 10,
        "weight_decay": finetune.WEIGHT_DECAY,
    }
    assert 1e-4 in task.lr_grid
    assert "MobileNetV2" in task.description and "param_groups" in task.description
    cpu = finetune.SIZES["cpu"]
    assert cpu.num_steps % 20 == 0  # the runner's 20 chunks are all one length: one compile


def test_twenty_steps_of_the_hand_optimizer_lower_the_loss(task, trained):
    final, losses = trained
    assert losses.shape == (20,) and np.all(np.isfinite(losses))
    assert abs(losses[0] - np.log(10)) < 0.2  # a new head starts near uniform
    assert losses[-5:].mean() < losses[:5].mean() - 0.05
    metrics = task.evaluate(final)
    assert set(metrics) == {"loss", "accuracy", "top5"}
    assert all(np.isfinite(v) for v in metrics.values())
    assert 0.0 <= metrics["accuracy"] <= metrics["top5"] <= 1.0


def test_batches_are_pure_and_jittable(task):
    images, labels = task.batch(jax.random.key(3), 0)
    assert images.shape == (8, 28, 28) and images.dtype == jnp.uint8
    assert labels.shape == (8,) and int(labels.min()) >= 0 and int(labels.max()) < 10
    again = jax.jit(task.batch)(jax.random.key(3), 5)
    np.testing.assert_array_equal(images, again[0])
    np.testing.assert_array_equal(labels, again[1])


def test_the_splits_are_disjoint_and_fixed():
    spec = finetune.SIZES["cpu"]
    train, valid = finetune.held_out_split(60_000, spec.num_valid)
    assert len(valid) == spec.num_valid and len(train) == 60_000 - spec.num_valid
    assert len(np.intersect1d(train, valid)) == 0
    assert np.array_equal(np.sort(np.concatenate([train, valid])), np.arange(60_000))
    assert np.array_equal(valid, finetune.held_out_split(60_000, spec.num_valid)[1])
    # test images come from the official test set only: all of it at cpu size, a fixed
    # subset at tiny size
    assert spec.num_test is None and len(finetune.subset_of_test(10_000, None)) == 10_000
    num_test = finetune.SIZES["tiny"].num_test
    test = finetune.subset_of_test(10_000, num_test)
    assert len(np.unique(test)) == num_test and test.max() < 10_000
    assert np.array_equal(test, finetune.subset_of_test(10_000, num_test))


def test_valid_and_test_metrics_read_their_own_images(task, trained, params):
    """A head that always says class 0 scores, on each split, exactly the share of that
    split's images labelled 0: the held-out training images for valid, the official test
    images for test."""
    del trained  # compiled the test metrics already
    data = fashion_mnist()
    spec = finetune.SIZES["tiny"]
    _, valid = finetune.held_out_split(60_000, spec.num_valid)
    test = finetune.subset_of_test(10_000, spec.num_test)
    always_zero = {
        "backbone": params["backbone"],
        "head": {
            "kernel": jnp.zeros_like(params["head"]["kernel"]),
            "bias": jnp.zeros(10).at[0].set(10.0),
        },
    }
    share_valid = np.mean(data["y_train"][valid] == 0)
    share_test = np.mean(data["y_test"][test] == 0)
    assert share_valid != share_test  # so that the check tells the splits apart
    assert task.evaluate(always_zero, "valid")["accuracy"] == pytest.approx(share_valid)
    assert task.evaluate(always_zero, "test")["accuracy"] == pytest.approx(share_test)


def test_param_groups_label_every_tensor_and_drive_blockwise_hub(params):
    groups = finetune.param_groups(params)
    assert jax.tree.structure(groups) == jax.tree.structure(params)
    labels = jax.tree_util.tree_leaves_with_path(groups)
    assert len(labels) == len(jax.tree.leaves(params))
    for path, label in labels:
        assert label == ("head" if path[0].key == "head" else "backbone")
    assert set(jax.tree.leaves(groups["head"])) == {"head"}
    assert set(jax.tree.leaves(groups["backbone"])) == {"backbone"}
    # as the description says: block-wise HUB from the labels
    modes = {"backbone": "inverted", "head": "default"}
    tx = hubopt.hub(optax.adam(1e-3), optax.sgd(1e-3), blocks=jax.tree.map(modes.get, groups))
    tx.init(params)
    # and the spec language's blocks=finetune gives the same modes
    from hubopt.bench import optimizers

    assert optimizers.finetune_blocks(params) == jax.tree.map(modes.get, groups)


def test_the_backbone_starts_from_the_converted_checkpoint(task, params):
    """At "tiny" the backbone is the network's first 4 blocks with their own weights;
    at "cpu" (and "paper") the whole network."""
    sd = load_state_dict(mobilenet.pretrained_weights_path())
    bb = params["backbone"]
    num_blocks = finetune.SIZES["tiny"].num_blocks
    assert num_blocks == 4
    assert set(bb) == {"stem", *(f"block{i}" for i in range(1, num_blocks + 1))}
    np.testing.assert_array_equal(
        bb["stem"]["kernel"], sd["features.0.0.weight"].transpose(2, 3, 1, 0)
    )
    np.testing.assert_array_equal(
        bb["block3"]["depthwise"]["kernel"], sd["features.3.conv.1.0.weight"].transpose(2, 3, 1, 0)
    )
    np.testing.assert_array_equal(
        bb["block4"]["project"]["bn"]["bias"], sd["features.4.conv.3.bias"]
    )
    # the new head: 32 (block 4's channels) -> 10, small random weights, zero bias, per seed
    head = params["head"]
    assert head["kernel"].shape == (32, 10) and float(jnp.abs(head["bias"]).max()) == 0.0
    assert 0.005 < float(jnp.std(head["kernel"])) < 0.02
    other = task.init(jax.random.key(1))
    assert not np.allclose(head["kernel"], other["head"]["kernel"])
    np.testing.assert_array_equal(other["backbone"]["stem"]["kernel"], bb["stem"]["kernel"])

    full = get_task("fmnist_mobilenet_finetune", "cpu").init(jax.random.key(0))
    fb = full["backbone"]
    assert "classifier" not in fb and len(jax.tree.leaves(fb)) == 156
    np.testing.assert_array_equal(
        fb["block7"]["depthwise"]["kernel"], sd["features.7.conv.1.0.weight"].transpose(2, 3, 1, 0)
    )
    np.testing.assert_array_equal(
        fb["last_conv"]["kernel"][0, 0], sd["features.18.0.weight"][:, :, 0, 0].T
    )
    np.testing.assert_array_equal(
        fb["block16"]["project"]["bn"]["bias"], sd["features.16.conv.3.bias"]
    )
    assert full["head"]["kernel"].shape == (1280, 10)


def test_the_scratch_variant_is_the_same_network_randomly_initialised(task, params):
    scratch = finetune.make_task("fmnist", "mobilenet_scratch", "tiny")
    assert scratch.name == "fmnist_mobilenet_scratch"
    assert finetune.make_task("fmnist", "mobilenet", "tiny", pretrained=False).name == scratch.name
    p0, p1 = scratch.init(jax.random.key(0)), scratch.init(jax.random.key(1))
    assert jax.tree.structure(p0) == jax.tree.structure(params)
    assert jax.tree.map(jnp.shape, p0) == jax.tree.map(jnp.shape, params)
    assert not np.allclose(p0["backbone"]["stem"]["kernel"], params["backbone"]["stem"]["kernel"])
    assert not np.allclose(p0["backbone"]["stem"]["kernel"], p1["backbone"]["stem"]["kernel"])
    # He-normal kernels (gain 1 before the linear projections), BN an identity affine map
    stem, project = p0["backbone"]["stem"], p0["backbone"]["block3"]["project"]
    assert float(jnp.std(stem["kernel"])) == pytest.approx(np.sqrt(2 / 27), rel=0.15)
    assert float(jnp.std(project["kernel"])) == pytest.approx(np.sqrt(1 / 144), rel=0.05)
    assert float(stem["bn"]["scale"].min()) == 1.0 == float(stem["bn"]["scale"].max())
    assert scratch.hand == task.hand


def test_images_are_upsampled_bilinearly_and_normalised():
    for side in (32, 48, 224):
        u = finetune.upsampling_matrix(side)
        x = np.random.default_rng(side).random((28, 28)).astype(np.float32)
        ref = jax.image.resize(x, (side, side), "linear")
        np.testing.assert_allclose(u @ x @ u.T, ref, atol=1e-5)
    images = jnp.full((2, 28, 28), 255, jnp.uint8).at[1].set(0)
    out = finetune.prepare_images(images, 32)
    assert out.shape == (2, 32, 32, 3)
    mean, std = np.asarray(mobilenet.IMAGENET_MEAN), np.asarray(mobilenet.IMAGENET_STD)
    np.testing.assert_allclose(out[0, 5, 7], (1 - mean) / std, rtol=1e-5)
    np.testing.assert_allclose(out[1, 0, 0], -mean / std, rtol=1e-5)
    with pytest.raises(ValueError, match="upsampling"):
        finetune.upsampling_matrix(16)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="fmnist"):
        finetune.make_task("cifar10", "mobilenet", "tiny")
    with pytest.raises(ValueError, match="mobilenet"):
        finetune.make_task("fmnist", "xception", "tiny")
    with pytest.raises(ValueError, match="size"):
        finetune.make_task("fmnist", "mobilenet", "huge")
