"""Test configuration: CPU only; implicit rank promotion raises, so silent
broadcasting bugs fail loudly. (Strict *dtype* promotion is not usable: optax's
own Adam mixes a float with its int32 step count.)"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
