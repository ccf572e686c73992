"""Baselines: LGL2O, fixed blends and the paper's hand-designed presets."""
