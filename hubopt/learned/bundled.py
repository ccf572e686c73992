"""Learned optimizers meta-trained by hubopt and shipped inside the package.

    tx = hubopt.learned.pretrained("small", num_steps=1000)
    tx = hubopt.hub(optax.adam(1e-3), hubopt.learned.pretrained("small", num_steps=1000))

Each bundled optimizer is `weights/<name>.msgpack` (θ, in the shared msgpack
checkpoint format) beside `weights/<name>.provenance.json`, which records how it
was made (command, seed, git hash, wall time, meta-loss summary) and the
`MLPLOpt` architecture it belongs to.
"""

from __future__ import annotations

import json
import numbers
from pathlib import Path

import jax.numpy as jnp
import optax

from hubopt.learned.checkpoint import read_checkpoint
from hubopt.learned.lopt import MLPLOpt

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def available() -> list[str]:
    """Names of the bundled optimizers (those with both weights and provenance)."""
    if not WEIGHTS_DIR.is_dir():
        return []
    return sorted(
        p.name[: -len(".msgpack")]
        for p in WEIGHTS_DIR.glob("*.msgpack")
        if (WEIGHTS_DIR / (p.name[: -len(".msgpack")] + ".provenance.json")).exists()
    )


def provenance(name: str = "small") -> dict:
    """The provenance record of a bundled optimizer."""
    _check_name(name)
    return json.loads((WEIGHTS_DIR / f"{name}.provenance.json").read_text())


def theta_sha256(name: str = "small") -> str:
    """The SHA-256 of a bundled optimizer's θ file (what records name it by)."""
    from hubopt._src.file_hash import file_sha256

    _check_name(name)
    return file_sha256(WEIGHTS_DIR / f"{name}.msgpack")


def _check_name(name: str) -> None:
    names = available()
    if name not in names:
        raise ValueError(
            f"no bundled learned optimizer named {name!r} in {WEIGHTS_DIR}; "
            f"bundled: {names or 'none'}. Meta-train one with `hubopt meta-train` and load "
            "its theta.msgpack with hubopt.learned.read_checkpoint + MLPLOpt().optimizer."
        )


def load(name: str = "small") -> tuple[MLPLOpt, dict]:
    """(architecture, θ) of a bundled optimizer."""
    _check_name(name)
    prov = provenance(name)
    arch = prov.get("lopt", {})
    lopt = MLPLOpt(hidden_sizes=tuple(arch.get("hidden_sizes", (32,))))
    ck = read_checkpoint(WEIGHTS_DIR / f"{name}.msgpack")
    theta = {
        layer: {k: jnp.asarray(v, jnp.float32) for k, v in arrays.items()}
        for layer, arrays in ck["params"].items()
    }
    lopt._check_theta(theta)
    return lopt, theta


def pretrained(name: str = "small", *, num_steps: int) -> optax.GradientTransformationExtraArgs:
    """The bundled learned optimizer `name` for a run of `num_steps` steps.

    Its `update` needs params and the loss: `update(grads, state, params, value=loss)`.
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, numbers.Integral) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
    num_steps = int(num_steps)
    lopt, theta = load(name)
    return lopt.optimizer(theta, num_steps, name=f"hubopt-{name}")
