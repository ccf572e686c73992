"""Data sources of the tasks: generated or user-supplied, cached under `$HUBOPT_CACHE`."""
