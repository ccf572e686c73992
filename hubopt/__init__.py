"""hubopt: Hybrid-Update-Based optimization as optax transforms.

HUB mixes a hand-designed optimizer with a learned one, entry by entry, with
weights σ = softmax(|g|) computed over each parameter tensor.
"""

from hubopt import baselines
from hubopt._src.aliases import hub_adam, hub_adamax, hub_adamw
from hubopt._src.hub import (
    MODES,
    SIGMA_HIST_EDGES,
    HubLeafStats,
    HubState,
    hub,
    hub_stats,
    sigma_histogram,
)
from hubopt._src.sigma_rules import (
    RECOMMENDED_MODE,
    RECOMMENDED_SIGMA,
    SIGMA_RULES,
    SigmaRule,
    layer_softmax,
)

__all__ = [
    "MODES",
    "RECOMMENDED_MODE",
    "RECOMMENDED_SIGMA",
    "SIGMA_HIST_EDGES",
    "SIGMA_RULES",
    "SigmaRule",
    "HubLeafStats",
    "HubState",
    "baselines",
    "hub",
    "hub_adam",
    "hub_adamax",
    "hub_adamw",
    "hub_stats",
    "layer_softmax",
    "sigma_histogram",
]
__version__ = "0.1.0"

_SUBPACKAGES = ("learned", "tasks", "bench", "flax", "checkpoint")  # imported on first use


def __getattr__(name):
    """`hubopt.learned`, `hubopt.tasks`, `hubopt.bench`, `hubopt.flax` after a plain
    `import hubopt`, imported when first used (so that `import hubopt` stays light)."""
    if name in _SUBPACKAGES:
        import importlib

        try:
            return importlib.import_module(f"hubopt.{name}")
        except ModuleNotFoundError as e:
            if e.name and e.name.startswith("hubopt"):
                raise
            from hubopt._src.extras import require_extra

            raise require_extra(f"hubopt.{name}", e, "flax" if name == "flax" else None) from e
    raise AttributeError(f"module 'hubopt' has no attribute {name!r}")
