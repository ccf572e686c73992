"""One-line HUB conveniences with the paper's hand-designed partners."""

from __future__ import annotations

import optax

from hubopt._src.hub import hub


def hub_adam(learning_rate: optax.ScalarOrSchedule, learned, **hub_kwargs):
    """`hub(optax.adam(learning_rate), learned, **hub_kwargs)`."""
    return hub(optax.adam(learning_rate), learned, **hub_kwargs)


def hub_adamax(learning_rate: optax.ScalarOrSchedule, learned, **hub_kwargs):
    """`hub(optax.adamax(learning_rate), learned, **hub_kwargs)` (the paper's main pairing)."""
    return hub(optax.adamax(learning_rate), learned, **hub_kwargs)


def hub_adamw(learning_rate: optax.ScalarOrSchedule, learned, *, weight_decay=1e-4, **hub_kwargs):
    """`hub(optax.adamw(learning_rate, weight_decay=weight_decay), learned, **hub_kwargs)`."""
    return hub(optax.adamw(learning_rate, weight_decay=weight_decay), learned, **hub_kwargs)
