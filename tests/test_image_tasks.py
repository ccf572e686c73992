"""The image-classification tasks (paper Table 5) at their tiny size, and the paper-size
layouts checked without running them."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hubopt.tasks import get_task
from hubopt.tasks import image_classification as ic
from hubopt.tasks.models import pure_functions
from hubopt.tasks.models.resnet import conv2d, groups_for

TASK_NAMES = ["fmnist_resnet", "fmnist_vit", "mnist_resnet", "mnist_vit", "fmnist_mlp"]


def _train_on_one_batch(task, steps):
    """`steps` steps of the hand preset, every step on the first step's minibatch."""
    tx = task.hand_preset()
    batch = jax.jit(task.batch)(jax.random.key(1), 0)

    @jax.jit
    def step(carry, _):
        params, state = carry
        value, grads = jax.value_and_grad(task.loss)(params, batch)
        updates, state = tx.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), value

    params = task.init(jax.random.key(0))
    carry = (params, jax.jit(tx.init)(params))  # one compile, not one per leaf
    values = []
    for i in range(steps):
        carry, value = step(carry, i)
        values.append(float(value))
    return carry[0], np.asarray(values)


@pytest.mark.parametrize("name", TASK_NAMES)
def test_tiny_task_trains_20_steps_with_its_hand_preset(name):
    task = get_task(name, size="tiny")
    assert task.name == name and task.size == "tiny" and task.num_steps == 20
    assert task.metric == "accuracy" and task.higher_is_better
    assert task.splits == ("train", "valid", "test") and task.stochastic
    params, values = _train_on_one_batch(task, 20)
    assert np.all(np.isfinite(values))
    assert values[-1] < 0.98 * values[0] and values[-5:].mean() < values[:5].mean(), values
    m = task.evaluate(params)
    assert {"loss", "accuracy", "top5"} <= set(m)
    assert all(np.isfinite(v) for v in m.values()), m
    assert 0.0 <= m["accuracy"] <= m["top5"] <= 1.0, m


@pytest.mark.parametrize("name", ["fmnist_vit", "mnist_resnet"])
def test_batch_is_pure_jittable_and_augmented_as_documented(name):
    task = get_task(name, size="tiny")
    batch = jax.jit(task.batch)
    x, t = batch(jax.random.key(3), 0)
    x2, t2 = batch(jax.random.key(3), 7)
    x3, _ = batch(jax.random.key(4), 0)
    assert x.shape == (16, 28, 28, 1) and x.dtype == jnp.float32 and t.shape == (16, 10)
    np.testing.assert_array_equal(x, x2)  # a function of the key alone
    np.testing.assert_array_equal(t, t2)
    assert not np.array_equal(x, x3)
    np.testing.assert_allclose(t.sum(axis=1), 1.0, rtol=1e-6)
    soft = np.sum(np.max(np.asarray(t), axis=1) < 1.0)
    if name.endswith("vit"):  # CutMix: some targets are mixed
        assert soft > 0 and "CutMix" in task.description
    else:  # one-hot targets, no flip for digits
        assert soft == 0 and "CutMix" not in task.description
        assert "flip" not in task.description
    assert ("flip" in task.description) == name.startswith("fmnist")


def test_splits_are_disjoint_fixed_and_sized():
    for data, sizes in [("fmnist", (55_000, 5_000, 10_000)), ("mnist", (3_500, 500, 1_000))]:
        splits = ic.split_indices(data)
        again = ic.split_indices(data)
        assert tuple(len(splits[k][1]) for k in ("train", "valid", "test")) == sizes
        for a in ("train", "valid", "test"):
            np.testing.assert_array_equal(splits[a][1], again[a][1])  # fixed by the seed
            assert len(np.unique(splits[a][1])) == len(splits[a][1])
            for b in ("train", "valid", "test"):
                if a < b and splits[a][0] == splits[b][0]:
                    assert not set(splits[a][1].tolist()) & set(splits[b][1].tolist()), (a, b)
    assert ic.split_indices("fmnist")["test"][0] == "test"  # the official test images
    mnist = ic.load_splits("mnist")
    for name, per_class in ic.MNIST_PER_CLASS.items():
        np.testing.assert_array_equal(np.bincount(mnist[name].y, minlength=10), per_class)
    # the tiny tasks' splits are the first images of these (random) orders
    from hubopt.tasks.data.mnist import mnist_subset

    x_all, y_all = mnist_subset()
    _, test_idx = ic.split_indices("mnist")["test"]
    np.testing.assert_array_equal(mnist["test"].x[:, :, :, 0], x_all[test_idx])
    np.testing.assert_array_equal(mnist["test"].y, y_all[test_idx])


def _toy_splits(n_test=37, num_classes=10, seed=0):
    rng = np.random.default_rng(seed)

    def split(n):
        x = rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8)
        return ic.Split(x, rng.integers(0, num_classes, n).astype(np.int32))

    return {"train": split(50), "valid": split(20), "test": split(n_test)}


def test_metrics_count_every_image_of_a_split_once():
    # 37 test images in chunks of 100 at tiny size: the padding must not count
    splits = _toy_splits()
    task = ic.classification_task(
        name="toy_vit",
        size="tiny",
        model="vit",
        splits=splits,
        num_classes=10,
        num_steps=20,
        flip=False,
        description="toy",
    )
    params = task.init(jax.random.key(0))
    rng = np.random.default_rng(1)  # perturbed: the zero-initialised head ties every logit
    params = jax.tree.map(lambda p: p + 0.3 * rng.normal(size=p.shape).astype(np.float32), params)
    module, _ = ic.model_for("vit", "tiny", 10)
    _, apply = pure_functions(module)
    # by hand: standardise with the training images' statistics, then the logits
    train = splits["train"].x.astype(np.float64) / 255.0
    x = (splits["test"].x / 255.0 - train.mean()) / train.std()
    logits = np.asarray(jax.jit(apply)(params, jnp.asarray(x, jnp.float32)), np.float64)
    y = splits["test"].y
    top = logits.max(1, keepdims=True)
    log_p = logits - top - np.log(np.exp(logits - top).sum(1, keepdims=True))
    top5 = np.argsort(-logits, axis=1)[:, :5]
    m = task.evaluate(params)
    assert m["loss"] == pytest.approx(-np.mean(log_p[np.arange(37), y]), rel=1e-4)
    assert m["accuracy"] == pytest.approx(np.mean(logits.argmax(1) == y), abs=1e-6)
    assert m["top5"] == pytest.approx(np.mean([y[i] in top5[i] for i in range(37)]), abs=1e-6)
    assert m["accuracy"] <= m["top5"]
    assert "train/valid/test 50/20/37" in task.description


def _count_blocks(params):
    stages = {}
    for key in params:
        match = re.fullmatch(r"stage(\d+)_block(\d+)", key)
        if match:
            stages.setdefault(int(match[1]), []).append(int(match[2]))
    return [len(stages[s]) for s in sorted(stages)]


def test_resnet_paper_size_is_resnet50s_bottleneck_layout():
    task = get_task("fmnist_resnet", size="paper")
    params = jax.eval_shape(task.init, jax.random.key(0))
    assert _count_blocks(params) == [3, 4, 6, 3]
    assert params["stem"]["kernel"].shape == (9 * 1, 64)  # 3×3 stem on grey images
    widths = (64, 128, 256, 512)
    c_in = 64
    for s, (n, w) in enumerate(zip((3, 4, 6, 3), widths, strict=True)):
        for b in range(n):
            block = params[f"stage{s}_block{b}"]
            assert block["conv1"]["kernel"].shape == (c_in, w)
            assert block["conv2"]["kernel"].shape == (9 * w, w)
            assert block["conv3"]["kernel"].shape == (w, 4 * w)  # expansion 4
            assert ("proj" in block) == (b == 0)  # a projection where channels change
            assert block["norm3"]["scale"].shape == (4 * w,)  # GroupNorm, no batch stats
            c_in = 4 * w
    assert params["head"]["kernel"].shape == (2048, 10)
    n = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
    assert 23.4e6 < n < 23.6e6, n  # ResNet-50 without its ImageNet stem and head: 23.5M
    assert task.num_steps == 20_000 and "GroupNorm" in task.description


def test_vit_paper_size_is_depth_9_width_192_12_heads():
    task = get_task("mnist_vit", size="paper")
    params = jax.eval_shape(task.init, jax.random.key(0))
    blocks = [k for k in params if re.fullmatch(r"block\d+", k)]
    assert len(blocks) == 9
    assert params["embed"]["kernel"].shape == (4 * 4 * 1, 192)  # patch 4
    assert params["position"].shape == (1, 7 * 7 + 1, 192)  # 49 patches and the class token
    assert params["cls"].shape == (1, 1, 192)
    attention = params["block0"]["attention"]
    assert attention["query"]["kernel"].shape == (192, 12, 16)  # 12 heads of 16
    assert params["block0"]["mlp1"]["kernel"].shape == (192, 4 * 192)  # MLP ratio 4
    assert params["head"]["kernel"].shape == (192, 10)


def test_mlp_is_relu_dense_layers_on_the_flattened_image():
    task = get_task("fmnist_mlp", size="cpu")
    params = jax.eval_shape(task.init, jax.random.key(0))
    assert params["hidden0"]["kernel"].shape == (28 * 28, 128)  # the ≥ 10⁴-entry tensor
    assert params["head"]["kernel"].shape == (128, 10)
    assert task.hand == {"name": "adam", "learning_rate": 1e-3, "schedule": "warmup_cosine",
                         "warmup_steps": 300}  # fmt: skip
    module, _ = ic.model_for("mlp", "tiny", 3)
    init, apply = pure_functions(module)
    x = jax.random.normal(jax.random.key(1), (2, 4, 4, 1))
    p = init(jax.random.key(2), x)
    h = jnp.maximum(x.reshape(2, 16) @ p["hidden0"]["kernel"] + p["hidden0"]["bias"][None], 0.0)
    expected = h @ p["head"]["kernel"] + p["head"]["bias"][None]  # the formula, by hand
    np.testing.assert_allclose(apply(p, x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("size, stride", [(3, 1), (3, 2), (1, 1), (1, 2)])
@pytest.mark.parametrize("side", [7, 8])
def test_resnet_im2col_convolution_equals_lax(size, stride, side):
    x = jax.random.normal(jax.random.key(0), (2, side, side, 3))
    kernel = jax.random.normal(jax.random.key(1), (size, size, 3, 5))
    reference = jax.lax.conv_general_dilated(
        x, kernel, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    out = conv2d(x, kernel.reshape(size * size * 3, 5), size, stride)
    assert out.shape == reference.shape
    np.testing.assert_allclose(out, reference, rtol=1e-5, atol=1e-5)


def test_group_norm_groups():
    assert [groups_for(c) for c in (4, 8, 48, 64, 2048)] == [4, 8, 24, 32, 32]


def test_hand_presets_are_the_papers():
    resnet = get_task("fmnist_resnet", size="tiny")
    assert resnet.hand == {
        "name": "adam",
        "learning_rate": 7.5e-4,
        "schedule": "warmup_cosine",
        "warmup_steps": 2,  # 1/10 of the budget
    }
    vit = get_task("mnist_vit", size="tiny")
    assert vit.hand == {
        "name": "adamw",
        "learning_rate": 3e-3,
        "weight_decay": 0.05,
        "schedule": "warmup_cosine",
        "warmup_steps": 2,
    }
    for task in (resnet, vit):
        assert len(task.lr_grid) == 3 and task.hand["learning_rate"] in task.lr_grid
    cpu = ic.hand_for("resnet", ic.SIZES["cpu"].num_steps["fmnist"])[0]
    assert cpu["warmup_steps"] == ic.SIZES["cpu"].num_steps["fmnist"] // 10


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="data must be one of"):
        ic.make_task("kmnist", "resnet", "tiny")
    with pytest.raises(ValueError, match="model must be one of"):
        ic.make_task("mnist", "transformer", "tiny")
    with pytest.raises(ValueError, match="unknown size"):
        ic.make_task("mnist", "vit", "huge")
    bad = _toy_splits()
    bad["test"] = ic.Split(bad["test"].x, bad["test"].y + 10)
    with pytest.raises(ValueError, match=r"labels outside \[0, 10\)"):
        ic.classification_task(
            name="toy_vit",
            size="tiny",
            model="vit",
            splits=bad,
            num_classes=10,
            num_steps=20,
            flip=False,
            description="toy",
        )


def test_cifar10_task_on_a_folder_of_batches(tmp_path):
    import pickle

    rng = np.random.default_rng(0)
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        rows = rng.integers(0, 256, (6, 3072), dtype=np.uint8)
        with open(tmp_path / name, "wb") as f:
            pickle.dump({"data": rows, "labels": [int(v) for v in rng.integers(0, 10, 6)]}, f)
    task = ic.cifar10_task(tmp_path, "vit", "tiny")
    assert task.name == "cifar10_vit" and "train/valid/test 27/3/6" in task.description
    params = jax.eval_shape(task.init, jax.random.key(0))
    assert params["embed"]["kernel"].shape == (8 * 8 * 3, 16)  # the paper's 8×8 patches
    x, t = jax.jit(task.batch)(jax.random.key(0), 0)
    assert x.shape == (16, 32, 32, 3) and t.shape == (16, 10)
