"""XLA's quick-compile flags, for runs that spend far longer compiling than computing.

A smoke run (`hubopt sweep smoke`: every task at its tiny size, a few steps each)
spends about three quarters of its time in XLA's compiler. With

    --xla_backend_optimization_level=0     no LLVM optimisation of the generated code
    --xla_cpu_use_fusion_emitters=false    XLA:CPU's older, cheaper fusion code generator

its programs compile about 3× faster and run 3–8× slower per step (BENCHMARKS.md), a
good trade at 20 steps and a bad one at 1,000. XLA reads `$XLA_FLAGS` once, when JAX
starts its backend in a process, so the flags must be set before JAX's first
computation there; processes started afterwards (a sweep's workers) inherit them.
A record keeps the `$XLA_FLAGS` its process ran with (`meta.xla_flags`).
"""

from __future__ import annotations

import os
import warnings

__all__ = ["QUICK_COMPILE_FLAGS", "use_quick_compile"]

QUICK_COMPILE_FLAGS = (
    "--xla_backend_optimization_level=0",
    "--xla_cpu_use_fusion_emitters=false",
)


def _backend_started() -> bool:
    from jax._src import xla_bridge

    return xla_bridge.backends_are_initialized()


def use_quick_compile() -> bool:
    """Adds `QUICK_COMPILE_FLAGS` to `$XLA_FLAGS` for this process and those it starts.

    Returns True when XLA will use them; when JAX's backend has already started in
    this process it warns that they take no effect here and returns False (a flag
    the user set already counts as set)."""
    current = os.environ.get("XLA_FLAGS", "").split()
    missing = [f for f in QUICK_COMPILE_FLAGS if f not in current]
    if not missing:
        return True
    if _backend_started():
        warnings.warn(
            "quick compile: JAX's backend has already started in this process, so XLA "
            "will not read the quick-compile flags here; programs compile as usual",
            UserWarning,
            stacklevel=2,
        )
        return False
    os.environ["XLA_FLAGS"] = " ".join([*current, *missing])
    return True
