"""Tasks: pure init/loss functions over parameter pytrees (contract: `hubopt.tasks.base`).

    task = hubopt.tasks.get_task("sine_ltc", size="tiny")
    params = task.init(jax.random.key(0))
    batch = task.batch(jax.random.key(1), 0); task.loss(params, batch)
    task.evaluate(params)                     # {"mse": ..., "loss": ...} on the test split

`TASKS` maps each registered name to a factory `size -> Task`, so that tasks
with data build nothing until asked for.

Registering a task of your own: write a factory that returns a `Task` whose
`name` is the registered name and whose `size` is the size asked for, and
register it before `get_task` is called:

    def my_factory(size: str) -> Task:
        steps = {"tiny": 20, "cpu": 2_000, "paper": 20_000}[size]
        return Task(name="mydata_mlp", init=..., loss=..., num_steps=steps,
                    batch=..., metrics_fn=..., metric="accuracy",
                    higher_is_better=True, hand={"name": "adam", "learning_rate": 1e-3},
                    size=size, description="...")

    hubopt.tasks.register_task("mydata_mlp", my_factory)

Every tool that takes a task name (`hubopt run --task`, the benchmarks)
then finds it.
"""

from __future__ import annotations

from collections.abc import Callable

from hubopt._src.extras import EXTRA_OF_MODULE, require_extra
from hubopt.tasks.base import SIZES, SPLITS, Task

__all__ = ["SIZES", "SPLITS", "TASKS", "Task", "get_task", "register_task", "task_names"]


def _nonconvex_l1cos(size: str) -> Task:
    from hubopt.tasks import nonconvex

    return nonconvex.sized_task(size)


def _in_module(module: str, *args: str) -> Callable[[str], Task]:
    """A factory calling `hubopt.tasks.<module>.make_task(*args, size)`, imported on use."""

    def factory(size: str) -> Task:
        import importlib

        return importlib.import_module(f"hubopt.tasks.{module}").make_task(*args, size)

    return factory


TASKS: dict[str, Callable[[str], Task]] = {
    "nonconvex_l1cos": _nonconvex_l1cos,
    "sine_ltc": _in_module("sine", "ltc"),
    "sine_lstm": _in_module("sine", "lstm"),
    "carracing_ltc": _in_module("lane_keeping", "ltc"),
    "carracing_lstm": _in_module("lane_keeping", "lstm"),
    "volume_siren": _in_module("volume", "siren"),
    "fmnist_resnet": _in_module("image_classification", "fmnist", "resnet"),
    "fmnist_vit": _in_module("image_classification", "fmnist", "vit"),
    "mnist_resnet": _in_module("image_classification", "mnist", "resnet"),
    "mnist_vit": _in_module("image_classification", "mnist", "vit"),
    "fmnist_mlp": _in_module("image_classification", "fmnist", "mlp"),
    "fmnist_mobilenet_finetune": _in_module("finetune", "fmnist", "mobilenet"),
    "fmnist_mobilenet_scratch": _in_module("finetune", "fmnist", "mobilenet_scratch"),
}


# the learned optimizer's held-out tasks (its quality benchmark, `hubopt sweep lopt`)
from hubopt.tasks.lopt_heldout import NAMES as _LOPT_HELDOUT  # noqa: E402

TASKS.update({name: _in_module("lopt_heldout", name) for name in _LOPT_HELDOUT})


def task_names() -> list[str]:
    """The registered task names, sorted."""
    return sorted(TASKS)


def register_task(name: str, factory: Callable[[str], Task], *, replace: bool = False) -> None:
    """Adds `factory` (`size -> Task`) to the registry under `name`.

    A name already registered is a `ValueError` unless `replace=True`.
    """
    if not isinstance(name, str) or "_" not in name:
        raise ValueError(f"a task name must be '<data>_<model>', got {name!r}")
    if not callable(factory):
        raise TypeError(f"factory for {name!r} must be callable (size -> Task)")
    if name in TASKS and not replace:
        raise ValueError(f"task {name!r} is already registered; pass replace=True to replace it")
    TASKS[name] = factory


def get_task(name: str, size: str = "cpu") -> Task:
    """The registered task called `name`, built at `size` (one of `SIZES`).

    An unknown name or size is a `ValueError` that lists the valid ones.
    """
    if not isinstance(name, str):
        raise TypeError(f"task name must be a str, got {type(name).__name__}")
    if not isinstance(size, str) or size not in SIZES:
        raise ValueError(f"unknown task size {size!r}; sizes: {', '.join(SIZES)}")
    try:
        factory = TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(task_names())}") from None
    try:
        task = factory(size)
    except ModuleNotFoundError as e:  # an optional library of the tasks' extra
        if e.name and e.name.split(".")[0] in EXTRA_OF_MODULE:
            raise require_extra(f"task {name!r}", e) from e
        raise
    if not isinstance(task, Task):
        raise TypeError(f"task factory for {name!r} returned {type(task).__name__}, not a Task")
    if task.name != name or task.size != size:
        raise RuntimeError(
            f"task factory for {name!r} at size {size!r} built {task.name!r} at size {task.size!r}"
        )
    return task
