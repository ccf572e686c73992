"""Hand-designed optimizers as the HUB paper uses them, built on optax.

`hand_optimizer(name, learning_rate, schedule=...)` gives Adam, Adamax or
AdamW with one of three learning-rate schedules:

    None            η_t = η
    "warmup_cosine" η_t = η·t/W for t < W, then η·½(1 + cos(π (t − W)/(T − W)))
    "step"          η_t = η·γ^⌊t / k⌋      (γ = decay_factor, k = decay_every)

`PRESETS` names the settings our experiments use. The learning rates are the
optimizers' customary defaults (Adam/AdamW 1e-3, Adamax 2e-3 as in Kingma & Ba);
a task that tunes them records the tuned value in its run record.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optax

OPTIMIZERS = ("adam", "adamax", "adamw")
SCHEDULES = (None, "warmup_cosine", "step")


def learning_rate_schedule(
    learning_rate: float,
    schedule: str | None = None,
    *,
    total_steps: int | None = None,
    warmup_steps: int = 0,
    decay_every: int | None = None,
    decay_factor: float = 0.1,
) -> optax.ScalarOrSchedule:
    """The learning rate (a float, or an optax schedule) for `schedule`."""
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be positive, got {learning_rate}")
    if schedule is None:
        return learning_rate
    if schedule == "warmup_cosine":
        if total_steps is None or total_steps <= warmup_steps:
            raise ValueError(
                "schedule='warmup_cosine' needs total_steps > warmup_steps, got "
                f"total_steps={total_steps}, warmup_steps={warmup_steps}"
            )
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0,
            peak_value=learning_rate,
            warmup_steps=warmup_steps,
            decay_steps=total_steps,
            end_value=0.0,
        )
    if schedule == "step":
        if decay_every is None or decay_every <= 0:
            raise ValueError(f"schedule='step' needs decay_every > 0, got {decay_every}")
        if not 0 < decay_factor <= 1:
            raise ValueError(f"decay_factor must lie in (0, 1], got {decay_factor}")
        return optax.exponential_decay(
            learning_rate, transition_steps=decay_every, decay_rate=decay_factor, staircase=True
        )
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")


def hand_optimizer(
    name: str,
    learning_rate: float = 1e-3,
    *,
    schedule: str | None = None,
    total_steps: int | None = None,
    warmup_steps: int = 0,
    decay_every: int | None = None,
    decay_factor: float = 0.1,
    weight_decay: float | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Adam, Adamax or AdamW with a constant, warm-up + cosine, or step-decay schedule.

    `weight_decay` (decoupled) applies to AdamW only (default 1e-4 there).
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"name must be one of {OPTIMIZERS}, got {name!r}")
    if weight_decay is not None and name != "adamw":
        raise ValueError(f"weight_decay is for 'adamw' only, got it for {name!r}")
    lr = learning_rate_schedule(
        learning_rate,
        schedule,
        total_steps=total_steps,
        warmup_steps=warmup_steps,
        decay_every=decay_every,
        decay_factor=decay_factor,
    )
    if name == "adam":
        tx = optax.adam(lr)
    elif name == "adamax":
        tx = optax.adamax(lr)
    else:
        tx = optax.adamw(lr, weight_decay=1e-4 if weight_decay is None else weight_decay)
    return optax.with_extra_args_support(tx)


HAND_SPEC_KEYS = (
    "learning_rate",
    "schedule",
    "warmup_steps",
    "decay_every",
    "decay_factor",
    "weight_decay",
)


def from_spec(spec: Mapping[str, Any], total_steps: int) -> optax.GradientTransformationExtraArgs:
    """`hand_optimizer` from a spec `{"name": ..., <HAND_SPEC_KEYS>}`, a schedule laid over
    `total_steps` (a task's `hand`, a record's hand spec)."""
    unknown = set(spec) - {"name", *HAND_SPEC_KEYS}
    if unknown:
        raise ValueError(
            f"hand optimizer {spec.get('name')!r}: unknown field(s) {sorted(unknown)}; "
            f"allowed: {list(HAND_SPEC_KEYS)}"
        )
    kwargs = {k: spec[k] for k in HAND_SPEC_KEYS if k in spec}
    if kwargs.get("schedule") is not None:
        kwargs["total_steps"] = total_steps
    return hand_optimizer(spec["name"], **kwargs)


# Named settings: name -> keyword arguments of `hand_optimizer` (total_steps is
# supplied by the caller for the scheduled ones).
PRESETS: dict[str, dict[str, Any]] = {
    "adam": dict(name="adam", learning_rate=1e-3),
    "adamax": dict(name="adamax", learning_rate=2e-3),
    "adamw": dict(name="adamw", learning_rate=1e-3, weight_decay=1e-4),
    "adam_warmup_cosine": dict(name="adam", learning_rate=1e-3, schedule="warmup_cosine"),
    "adamw_warmup_cosine": dict(
        name="adamw", learning_rate=1e-3, schedule="warmup_cosine", weight_decay=1e-4
    ),
    "adamax_step": dict(name="adamax", learning_rate=2e-3, schedule="step", decay_factor=0.1),
}


def preset(name: str, *, total_steps: int | None = None) -> optax.GradientTransformationExtraArgs:
    """The named setting from `PRESETS`; schedules are laid over `total_steps`.

    Warm-up takes the first 5% of the steps; step decay divides the rate by
    10 after each third of the run.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
    kwargs = dict(PRESETS[name])
    schedule = kwargs.get("schedule")
    if schedule is not None:
        if total_steps is None or total_steps < 3:
            raise ValueError(f"preset {name!r} needs total_steps >= 3, got {total_steps}")
        kwargs["total_steps"] = total_steps
        if schedule == "warmup_cosine":
            kwargs["warmup_steps"] = max(1, total_steps // 20)
        if schedule == "step":
            kwargs["decay_every"] = max(1, total_steps // 3)
    return hand_optimizer(**kwargs)
