"""JAX's persistent compilation cache for hubopt's commands (`hubopt run`, `hubopt sweep`).

A program XLA compiled once is written to the cache and read back, instead of compiled,
by any later process that compiles the same program (same HLO, JAX, XLA flags and
device). A sweep run again, resumed, or sharing programs across its worker processes
skips most of XLA's work: the smoke sweep's programs take about three times longer to
compile than to read back on a 2-core CPU (BENCHMARKS.md).

    folder   $HUBOPT_COMPILE_CACHE if set ("off" turns the cache off),
             else <cache root>/xla (`hubopt._src.cache_dir`: $HUBOPT_CACHE or
             ~/.cache/hubopt)

A cache the user configured for JAX itself (`JAX_COMPILATION_CACHE_DIR`, or
`jax.config.update("jax_compilation_cache_dir", ...)`) is kept as it is. A folder that
cannot be written leaves the cache off (compiling is only slower). The cache is
trusted code: like JAX, keep it in a folder only you can write. JAX does not cache
programs with host callbacks (the learned optimizers' warning past their budget;
`hubopt.bench.optimizers.build(..., warn_past_budget=False)` leaves it out).
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

from hubopt._src.cache_dir import cache_root, probe_writable

__all__ = ["COMPILE_CACHE_ENV_VAR", "add_no_compile_cache_argument", "enable_compile_cache"]

COMPILE_CACHE_ENV_VAR = "HUBOPT_COMPILE_CACHE"
OFF = ("0", "off", "false", "no")
MIN_COMPILE_TIME_S = 0.1  # programs faster to compile than this are not written
MAX_SIZE_BYTES = 2 << 30  # beyond this, the least recently used programs are deleted


def enable_compile_cache() -> Path | None:
    """Turns JAX's persistent compilation cache on in this process (see the module doc);
    returns its folder, or None when it stays off. Safe to call more than once."""
    own = jax.config.jax_compilation_cache_dir
    if own:
        return Path(own)
    setting = os.environ.get(COMPILE_CACHE_ENV_VAR, "").strip()
    if setting.lower() in OFF:
        return None
    folder = Path(setting).expanduser() if setting else cache_root() / "xla"
    try:
        probe_writable(folder)
    except OSError:
        return None
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_TIME_S)
    jax.config.update("jax_compilation_cache_max_size", MAX_SIZE_BYTES)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    return folder


def add_no_compile_cache_argument(parser) -> None:
    """The `--no-compile-cache` flag of the commands that turn the cache on."""
    parser.add_argument(
        "--no-compile-cache",
        action="store_true",
        help="compile every program anew (default: JAX's persistent compilation cache in "
        "$HUBOPT_COMPILE_CACHE or <cache>/xla keeps them for the next run)",
    )
