"""The learned optimizer's held-out tasks: its quality benchmark as tasks of the one contract.

Tasks that meta-training (`hubopt.learned.meta`) never trains on, in five kinds:

    in_distribution      other widths, batch sizes and instances of the training
                         families (MLPs on digits, MNIST-14 and regression, CNNs)
    out_of_distribution  a depth, activations, a width and an init scale that no
                         training task has
    other_data_set       MLPs on scikit-learn's breast-cancer table
    fine_tuning          an MLP pretrained with Adam on digits 0–4, fine-tuned with a
                         new head on digits 5–9
    test                 the untouched test set (`TEST_NAMES`): data of the "test" role
                         (MNIST-14, Fashion-MNIST-14, wine) and architectures no other
                         task has; reported numbers only

The first four are where recipes and θ checkpoints are chosen (`VALIDATION_NAMES`).
Each is a `hubopt.learned.meta.task_distribution.MetaTask` (the same models and
data code as meta-training) made into a `Task` with the harness's splits. The
headline is **the final loss on the whole training split** (`metric_split="train"`):
what a learned optimizer is for. Held-out splits follow the data's role
(`task_distribution.DATA_ROLES`):

- meta-train and meta-validation data (digits, breast cancer): meta-training's
  held-out term reads digits' 397 held-out images, and θ checkpoints are chosen on
  the breast-cancer tasks, so their held-out rows are the **valid** split and there
  is **no test split**;
- test data: held-out rows split into valid and test (`DataSet.n_valid`): MNIST-14
  500 / 500, wine 30 / 30, Fashion-MNIST 1,000 training-file / 2,000 test-file
  images;
- regression: one teacher instance drawn with a fixed key (the same for every
  seed, as other tasks fix their data); valid and test are 512 fresh noiseless
  points each.

The hand preset is Adam at 1e-3 with warm-up (1/10) and cosine decay, with the
grid `LR_GRID` for a tuned baseline (chosen on valid). Sizes: "tiny" 20 steps,
"cpu" 1,000 (the protocol of the bundled optimizers' BENCHMARKS.md numbers),
"paper" 2,000; any other horizon with `--steps` (the test set's protocol: 1,000,
2,000 and 5,000).

    hubopt sweep lopt --out runs/lopt && hubopt report runs/lopt
    hubopt sweep lopt_test --steps 5000 --out runs/lopt_test_5000
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from hubopt.learned.meta import task_distribution as td
from hubopt.tasks.base import Task

__all__ = [
    "FINETUNE",
    "HAND_LR",
    "KINDS",
    "LR_GRID",
    "NAMES",
    "STEPS",
    "TEST_NAMES",
    "VALIDATION_NAMES",
    "make_task",
]

HAND_LR = 1e-3
LR_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)  # tried by a tuned baseline
STEPS = {"tiny": 20, "cpu": 1_000, "paper": 2_000}
INSTANCE_SEED = 99  # the regression teacher's key (the same instance for every seed)
PRETRAIN_STEPS = 500


# ------------------------------------------------------------ fine-tuning task


@functools.lru_cache(maxsize=1)
def _pretrained_backbone() -> dict:
    """MLP 64-64-(5) trained with Adam(1e-3) for 500 steps on digits 0–4 (key 0); its
    two hidden layers, without the head."""
    d = td.load_digits_split()
    keep = d["y_tr"] < 5
    x, y = jnp.asarray(d["x_tr"][keep]), jnp.asarray(d["y_tr"][keep])
    params = td.mlp_init(jax.random.PRNGKey(0), (64, 64, 64, 5), 1.0)
    opt = optax.adam(1e-3)

    def loss(p, idx):
        return td.softmax_xent(td.mlp_apply(p, x[idx], "relu"), y[idx])

    def body(carry, t):
        p, s = carry
        idx = jax.random.randint(jax.random.PRNGKey(t), (64,), 0, x.shape[0])
        u, s = opt.update(jax.grad(loss)(p, idx), s, p)
        return (optax.apply_updates(p, u), s), None

    with jax.ensure_compile_time_eval():  # concrete even when first asked for in a trace
        (p, _), _ = jax.jit(
            lambda p: jax.lax.scan(body, (p, opt.init(p)), jnp.arange(PRETRAIN_STEPS))
        )(params)
        p = jax.device_get(p)
    return {k: v for k, v in p.items() if k != "layer2"}


@dataclasses.dataclass(frozen=True)
class FinetuneDigits(td.MetaTask):
    """Digits 5–9 (relabelled 0–4) from a backbone pretrained on digits 0–4; a new head."""

    def base_data(self) -> dict[str, Any]:
        d = td.load_digits_split()
        tr, te = d["y_tr"] >= 5, d["y_te"] >= 5
        return {
            "x_tr": d["x_tr"][tr],
            "y_tr": d["y_tr"][tr] - 5,
            "x_te": d["x_te"][te],
            "y_te": d["y_te"][te] - 5,
        }

    def init(self, key) -> dict:
        head = td.mlp_init(key, (64, 5), 1.0)["layer0"]
        return {**jax.tree_util.tree_map(jnp.asarray, _pretrained_backbone()), "layer2": head}


FINETUNE = FinetuneDigits(
    name="digits59_finetune_mlp64x64relu",
    dataset="digits",
    hidden=(64, 64),
    activation="relu",
    batch_size=64,
)

KINDS: dict[str, tuple[td.MetaTask, str]] = {
    **{t.name: (t, "in_distribution") for t in td.HELDOUT_IN_DISTRIBUTION},
    **{t.name: (t, "out_of_distribution") for t in td.HELDOUT_OUT_OF_DISTRIBUTION},
    **{t.name: (t, "other_data_set") for t in td.HELDOUT_OTHER_DATA},
    FINETUNE.name: (FINETUNE, "fine_tuning"),
    **{t.name: (t, "test") for t in td.TEST_TASKS},
}
NAMES = tuple(KINDS)
TEST_NAMES = tuple(t.name for t in td.TEST_TASKS)  # the untouched test set
VALIDATION_NAMES = tuple(n for n in NAMES if n not in TEST_NAMES)  # checkpoints are chosen here


# ------------------------------------------------------------------- the task


def _split_data(meta: td.MetaTask) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{split: (x, y)} with the data roles of the module docstring."""
    if meta.classification:
        d = meta.base_data()
        out = {"train": (d["x_tr"], d["y_tr"])}
        n_valid = td.DATASETS[meta.dataset].n_valid
        if td.data_role(meta) == "test" and n_valid is None:
            raise ValueError(
                f"{meta.dataset} is test data but its DataSet declares no n_valid: its "
                "held-out rows cannot be split into a valid and a test split"
            )
        if td.data_role(meta) != "test":
            # meta-training's held-out term read these, or θ checkpoints are chosen on
            # this data set: valid at best
            out["valid"] = (d["x_te"], d["y_te"])
        else:
            out["valid"] = (d["x_te"][:n_valid], d["y_te"][:n_valid])
            out["test"] = (d["x_te"][n_valid:], d["y_te"][n_valid:])
        return out
    key = jax.random.PRNGKey(INSTANCE_SEED)
    d = meta.instance_data(key, {})
    x_test, y_test = meta.regression_points(key, jax.random.fold_in(key, 1), 512)
    return {
        "train": (d["x_tr"], d["y_tr"]),
        "valid": (d["x_te"], d["y_te"]),
        "test": (x_test, y_test),
    }


def make_task(name: str, size: str) -> Task:
    """Held-out task `name` (one of `NAMES`) at `size` (its number of steps, `STEPS`)."""
    if name not in KINDS:
        raise ValueError(f"unknown held-out task {name!r}; known: {', '.join(NAMES)}")
    if size not in STEPS:
        raise ValueError(f"size must be one of {tuple(STEPS)}, got {size!r}")
    meta, kind = KINDS[name]
    data = {split: (jnp.asarray(x), jnp.asarray(y)) for split, (x, y) in _split_data(meta).items()}
    x_train, y_train = data["train"]
    num_steps = STEPS[size]

    def batch(key, step):
        del step  # every step draws afresh from the training split
        idx = jax.random.randint(key, (meta.batch_size,), 0, x_train.shape[0])
        return x_train[idx], y_train[idx]

    def metrics_fn(params, split):
        x, y = data[split]
        out = meta.apply(params, x)
        if not meta.classification:
            return {"loss": jnp.mean(jnp.square(out - y))}
        hits = (jnp.argmax(out, axis=-1) == y).astype(jnp.float32)
        return {"loss": td.softmax_xent(out, y), "accuracy": jnp.mean(hits)}

    counts = ", ".join(f"{split} {len(x)}" for split, (x, _y) in data.items())
    return Task(
        name=name,
        init=meta.init,
        loss=meta._loss,
        num_steps=num_steps,
        batch=batch,
        metrics_fn=metrics_fn,
        splits=tuple(data),
        metric="loss",
        metric_split="train",
        higher_is_better=False,
        hand={
            "name": "adam",
            "learning_rate": HAND_LR,
            "schedule": "warmup_cosine",
            "warmup_steps": num_steps // 10,
        },
        lr_grid=LR_GRID,
        size=size,
        description=(
            f"The learned optimizer's held-out task {name} ({kind.replace('_', ' ')}; "
            "hubopt.tasks.lopt_heldout): never meta-trained on; headline: the final loss "
            f"on the whole training split; splits {counts}"
            + ("" if "test" in data else " (no test split: meta-training has seen the rest)")
        ),
    )
