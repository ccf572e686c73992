"""Tasks: pure init/loss functions over parameter pytrees (contract: `hubopt.tasks.base`).

    task = hubopt.tasks.get_task("nonconvex_l1cos")
    params = task.init(jax.random.key(0)); task.loss(params, None)

`TASKS` maps each registered name to a zero-argument factory, so that tasks
with data build nothing until asked for.
"""

from __future__ import annotations

from collections.abc import Callable

from hubopt.tasks.base import Task

__all__ = ["TASKS", "Task", "get_task", "task_names"]


def _nonconvex_l1cos() -> Task:
    from hubopt.tasks import nonconvex

    return nonconvex.make_task()


TASKS: dict[str, Callable[[], Task]] = {
    "nonconvex_l1cos": _nonconvex_l1cos,
}


def task_names() -> list[str]:
    """The registered task names, sorted."""
    return sorted(TASKS)


def get_task(name: str) -> Task:
    """The registered task called `name`; a `ValueError` lists the known names."""
    if not isinstance(name, str):
        raise TypeError(f"task name must be a str, got {type(name).__name__}")
    try:
        factory = TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(task_names())}") from None
    task = factory()
    if task.name != name:
        raise RuntimeError(f"task factory for {name!r} built a task named {task.name!r}")
    return task
