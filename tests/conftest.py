"""Test configuration: CPU only; a fresh data cache; implicit rank promotion raises, so silent
broadcasting bugs fail loudly. (Strict *dtype* promotion is not usable: optax's
own Adam mixes a float with its int32 step count.)"""

import os
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Generated task data goes to a fresh cache for the session, never the user's own.
os.environ.setdefault("HUBOPT_CACHE", tempfile.mkdtemp(prefix="hubopt-test-cache-"))
# No persistent compilation cache for the commands tests run in this process (a test that
# wants it sets its own folder): each test compiles what it runs.
os.environ["HUBOPT_COMPILE_CACHE"] = "off"

import jax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
