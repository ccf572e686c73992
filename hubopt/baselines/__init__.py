"""Baselines: LGL2O, fixed blends and the paper's hand-designed presets."""

from hubopt.baselines.blend import blend
from hubopt.baselines.lgl2o import LGL2OState, lgl2o, lgl2o_stats
from hubopt.baselines.presets import (
    OPTIMIZERS,
    PRESETS,
    SCHEDULES,
    hand_optimizer,
    learning_rate_schedule,
    preset,
)

__all__ = [
    "LGL2OState",
    "OPTIMIZERS",
    "PRESETS",
    "SCHEDULES",
    "blend",
    "hand_optimizer",
    "learning_rate_schedule",
    "lgl2o",
    "lgl2o_stats",
    "preset",
]
