"""Tasks: pure init/loss functions over parameter pytrees."""
