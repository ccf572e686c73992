"""Models of the tasks, in Flax: pure `apply(params, ...)` over parameter pytrees."""
