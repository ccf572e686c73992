"""The task contract: what a test problem is, in one small file.

A task is a frozen bundle of pure functions over a parameter pytree, named
DeepOBS-style `<data>_<model>` (`nonconvex_l1cos`, `sine_ltc`, ...):

    params  = task.init(key)                 # a pytree of arrays
    loss    = task.loss(params, batch)       # a scalar training loss; batch is None
                                             # for deterministic (full-batch) tasks
    batch   = task.batch(key, step)          # stochastic tasks only: pure and jittable,
                                             # so a lax.scan can draw it
    v       = task.eval_loss(params)         # the validation loss (untimed, jittable)
    metrics = task.evaluate(params)          # {"mse": ..., ...} on the TEST split, floats
    tx      = task.hand_preset()             # the paper's tuned hand optimizer for it

Data roles. A task with data has three disjoint splits, and each function
reads exactly one of them:

    train  `batch` (and so `loss` during training),  what optimizers learn from
           `evaluate(params, "train")`              (whole-split training metrics)
    valid  `eval_loss`, `evaluate(params, "valid")`  choosing hyperparameters,
                                                     recipes and checkpoints
    test   `evaluate(params)` (split="test")        reported numbers only

`metrics_fn(params, split)` is the one pure function behind the evaluations
(`split` is a static string from the task's `splits`). A deterministic task
(`nonconvex_l1cos`) has no data: its metrics on every split are the same
function value, and it says so in its description.

A task declares its own budget (`num_steps`), its headline metric (`metric`,
a key of `metrics_fn`'s dict; `higher_is_better` says which way is good), a
`target_loss` if it has one (AlgoPerf's target: a run reaches it at the first
step whose loss is <= it), the hand-designed optimizer the paper tuned for it
(`hand`: keyword arguments of `hubopt.baselines.hand_optimizer`, laid over
the budget by `hand_preset`), and the size it was built at.

Sizes. Every registered task is built at one of `SIZES`:

    "tiny"   a test trains it a few steps in seconds (small model, small data)
    "cpu"    the default: its whole budget runs in at most 5 minutes on 2 CPU cores
    "paper"  the paper's model sizes and budgets, for GPUs

How a run is trained, timed and recorded is not the task's business
(`hubopt.bench.runner`). How to register a task of your own:
`hubopt.tasks.register_task` (in `hubopt/tasks/__init__.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import jax
import optax

Params = Any
Batch = Any

SIZES = ("tiny", "cpu", "paper")
SPLITS = ("train", "valid", "test")


def loss_scaled_name(name: str, scale: float) -> str:
    """The name of task `name` with its training loss × `scale` (`Task.with_loss_scale`):
    `<name>_x<scale>`, "sine_lstm_x0.001"; `name` itself at scale 1."""
    return name if scale == 1 else f"{name}_x{float(scale):g}"


@dataclass(frozen=True)
class Task:
    """One test problem. All callables are pure JAX functions.

    Attributes:
      name: `<data>_<model>`, unique in the registry (`hubopt.tasks.TASKS`).
      init: `key -> params`.
      loss: `(params, batch) -> scalar` training loss; `batch` is None when
        `batch` (below) is None.
      num_steps: the recommended number of optimizer steps (the budget).
      batch: `(key, step) -> batch` drawing from the training split, for
        stochastic tasks; None for deterministic ones.
      eval_fn: `params -> scalar` validation loss; None means
        `metrics_fn(params, "valid")["loss"]` when there is a `metrics_fn`,
        else `loss(params, None)`.
      metrics_fn: `(params, split) -> {name: scalar}` on a split of `splits`
        (a static string), with at least "loss" and `metric`; None means
        `{"loss": eval_loss(params)}`.
      splits: the splits `metrics_fn` serves, a subset of `SPLITS`. None
        means all three with a `metrics_fn` or for a deterministic task (no
        data: every split is the same function), else only "valid".
      metric: the headline key of `metrics_fn`'s dict (what tables report).
      metric_split: the split whose `metric` tables report: "test" for the paper's
        tasks; "train" for optimization-quality tasks whose headline is the final
        loss on the whole training split (the learned optimizer's held-out tasks,
        whose other data meta-training has seen). One of `splits`.
      higher_is_better: whether a larger `metric` is better (accuracy, PSNR).
      hand: the paper's hand-designed optimizer for this task, as keyword
        arguments of `hubopt.baselines.hand_optimizer` (`total_steps` is
        filled in by `hand_preset`).
      lr_grid: the learning rates a fair comparison tries for `hand` (same
        optimizer and schedule family, chosen on the valid split by
        `hubopt.bench.tuning`); empty when none is declared.
      size: one of `SIZES`.
      target_loss: the loss a good run should reach, or None.
      description: what the task is, where it comes from, and where it
        departs from the paper.
    """

    name: str
    init: Callable[[jax.Array], Params]
    loss: Callable[[Params, Batch | None], jax.Array]
    num_steps: int
    batch: Callable[[jax.Array, jax.Array], Batch] | None = None
    eval_fn: Callable[[Params], jax.Array] | None = None
    metrics_fn: Callable[[Params, str], Mapping[str, jax.Array]] | None = None
    splits: tuple[str, ...] | None = None
    metric: str = "loss"
    metric_split: str = "test"
    higher_is_better: bool = False
    hand: Mapping[str, Any] = field(default_factory=lambda: {"name": "adam", "learning_rate": 1e-3})
    lr_grid: tuple[float, ...] = ()
    size: str = "cpu"
    target_loss: float | None = None
    description: str = ""

    def __post_init__(self):
        if not isinstance(self.name, str) or "_" not in self.name:
            raise ValueError(f"Task name must be '<data>_<model>', got {self.name!r}")
        for name in ("init", "loss"):
            if not callable(getattr(self, name)):
                raise TypeError(f"Task {self.name}: {name} must be callable")
        for name in ("batch", "eval_fn", "metrics_fn"):
            value = getattr(self, name)
            if value is not None and not callable(value):
                raise TypeError(f"Task {self.name}: {name} must be callable or None")
        if (
            isinstance(self.num_steps, bool)
            or not isinstance(self.num_steps, int)
            or self.num_steps < 1
        ):
            raise ValueError(
                f"Task {self.name}: num_steps must be a positive int, got {self.num_steps!r}"
            )
        if self.size not in SIZES:
            raise ValueError(f"Task {self.name}: size must be one of {SIZES}, got {self.size!r}")
        if not isinstance(self.metric, str) or not self.metric:
            raise ValueError(f"Task {self.name}: metric must be a non-empty str")
        if not isinstance(self.hand, Mapping) or "name" not in self.hand:
            raise ValueError(
                f"Task {self.name}: hand must be a mapping with at least 'name' (keyword "
                f"arguments of hubopt.baselines.hand_optimizer), got {self.hand!r}"
            )
        if "total_steps" in self.hand:
            raise ValueError(
                f"Task {self.name}: hand must not fix total_steps; hand_preset lays the "
                "schedule over the run's number of steps"
            )
        from hubopt.baselines.presets import HAND_SPEC_KEYS

        unknown = set(self.hand) - {"name", *HAND_SPEC_KEYS}
        if unknown:
            raise ValueError(
                f"Task {self.name}: hand has unknown field(s) {sorted(unknown)}; allowed: "
                f"name, {', '.join(HAND_SPEC_KEYS)}"
            )
        grid = tuple(self.lr_grid)
        if any(isinstance(v, bool) or not isinstance(v, int | float) or not v > 0 for v in grid):
            raise ValueError(
                f"Task {self.name}: lr_grid must hold positive learning rates, got {self.lr_grid!r}"
            )
        object.__setattr__(self, "lr_grid", tuple(float(lr) for lr in grid))
        if self.splits is None:
            full = self.metrics_fn is not None or not self.stochastic
            object.__setattr__(self, "splits", SPLITS if full else ("valid",))
        if not self.splits or any(split not in SPLITS for split in self.splits):
            raise ValueError(
                f"Task {self.name}: splits must be a non-empty subset of {SPLITS}, got "
                f"{self.splits!r}"
            )
        object.__setattr__(self, "splits", tuple(self.splits))
        if self.metric_split not in self.splits and not (
            self.metric_split == "test" and "test" not in self.splits
        ):
            raise ValueError(
                f"Task {self.name}: metric_split must be one of its splits {self.splits}, "
                f"got {self.metric_split!r}"
            )
        object.__setattr__(self, "_jitted", {})  # key -> jitted function (`jitted`; not a field)

    @property
    def stochastic(self) -> bool:
        """Whether each step draws a batch (`batch` is given)."""
        return self.batch is not None

    def eval_loss(self, params: Params) -> jax.Array:
        """The validation loss of `params` (untimed; pure and jittable)."""
        if self.eval_fn is not None:
            return self.eval_fn(params)
        if self.metrics_fn is not None:
            return self.metrics_fn(params, "valid")["loss"]
        return self.loss(params, None)

    def metrics(self, params: Params, split: str = "test") -> dict[str, jax.Array]:
        """The task's metrics on `split` (one of `splits`) as JAX scalars (jittable)."""
        if split not in self.splits:
            raise ValueError(
                f"Task {self.name}: split must be one of its splits {self.splits}, got {split!r}"
            )
        if self.metrics_fn is None:
            return {"loss": self.eval_loss(params)}
        return dict(self.metrics_fn(params, split))

    def evaluate(self, params: Params, split: str = "test") -> dict[str, float]:
        """The task's metrics on `split` (default: the test split) as Python floats.

        Untimed; compiled once per task and split. Report test numbers only;
        choose hyperparameters with `split="valid"`.
        """
        if split not in self.splits:
            raise ValueError(
                f"Task {self.name}: split must be one of its splits {self.splits}, got {split!r}"
            )
        values = self.jitted(("metrics", split), lambda p: self.metrics(p, split))(params)
        out = {k: float(v) for k, v in values.items()}
        if self.metric not in out:
            raise KeyError(
                f"Task {self.name}: metrics_fn returned {sorted(out)}, without the "
                f"headline metric {self.metric!r}"
            )
        return out

    def jitted(self, key: Hashable, fn: Callable) -> Callable:
        """`jax.jit(fn)`, made once per task and `key` and then kept: every caller naming
        `key` shares its compiled programs (one compile per task and input shapes, e.g.
        for every optimizer a sweep runs on this task). `fn` must depend on nothing but
        this task and its arguments, since a later call with the same `key` reuses the
        first `fn`."""
        jitted = self._jitted.get(key)
        if jitted is None:
            jitted = self._jitted[key] = jax.jit(fn)
        return jitted

    def with_budget(self, num_steps: int) -> Task:
        """This task with a budget of `num_steps` and its preset's schedule laid over it:
        the step counts of `hand` (warm-up, steps between decays) scaled by
        num_steps / self.num_steps and rounded (a decay every ≥ 1 step), so that a
        shorter or longer run keeps the schedule's shape (warm-up 1/10 stays 1/10)."""
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
        if num_steps == self.num_steps:
            return self
        scale = num_steps / self.num_steps
        hand = dict(self.hand)
        if hand.get("warmup_steps"):
            hand["warmup_steps"] = round(hand["warmup_steps"] * scale)
        if hand.get("decay_every"):
            hand["decay_every"] = max(1, round(hand["decay_every"] * scale))
        return replace(self, num_steps=num_steps, hand=hand)

    def with_loss_scale(self, scale: float) -> Task:
        """This task with its training loss multiplied by `scale` > 0, named
        `<name>_x<scale>`: what the optimizers see changes, the task does not (its
        validation loss and metrics stay in the task's units), so a method that is
        free of the loss's scale gets the same metrics at every scale."""
        if isinstance(scale, bool) or not isinstance(scale, int | float) or not scale > 0:
            raise ValueError(f"loss scale must be a positive number, got {scale!r}")
        if scale == 1:
            return self
        loss, c = self.loss, float(scale)
        eval_fn = self.eval_fn
        if eval_fn is None and self.metrics_fn is None:  # the valid loss stays unscaled
            eval_fn = lambda params: loss(params, None)  # noqa: E731
        return replace(
            self,
            name=loss_scaled_name(self.name, c),
            loss=lambda params, batch: c * loss(params, batch),
            eval_fn=eval_fn,
            description=f"{self.description} [training loss × {c:g}]",
        )

    def hand_preset(self, num_steps: int | None = None) -> optax.GradientTransformationExtraArgs:
        """The paper's hand-designed optimizer for this task, its schedule laid over
        `num_steps` (default: the task's budget)."""
        from hubopt.baselines.presets import from_spec

        total = self.num_steps if num_steps is None else num_steps
        if isinstance(total, bool) or not isinstance(total, int) or total < 1:
            raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
        return from_spec(self.hand, total)
