"""Models of the tasks, in Flax: pure `apply(params, ...)` over parameter pytrees."""

from collections.abc import Callable

import flax.linen as nn


def pure_functions(module: nn.Module) -> tuple[Callable, Callable]:
    """`(init, apply)` of a parameters-only Flax module:
    `init(key, x_example) -> params`, `apply(params, x) -> y`."""

    def init(key, x_example):
        return module.init(key, x_example)["params"]

    def apply(params, x):
        return module.apply({"params": params}, x)

    return init, apply
