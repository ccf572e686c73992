"""hubopt: Hybrid-Update-Based optimization as optax transforms.

HUB mixes a hand-designed optimizer with a learned one, entry by entry, with
weights σ = softmax(|g|) computed over each parameter tensor.
"""

from hubopt._src.hub import HubState, hub, hub_stats

__all__ = ["HubState", "hub", "hub_stats"]
__version__ = "0.1.0"
