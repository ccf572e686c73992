"""Learned optimizers meta-trained by hubopt and shipped inside the package.

    tx = hubopt.learned.small(num_steps=1000)
    tx = hubopt.hub(optax.adam(1e-3), hubopt.learned.small(num_steps=1000))

Each bundled optimizer is `weights/<name>.msgpack` (θ, in the shared msgpack
checkpoint format) beside `weights/<name>.provenance.json`, which records how it
was made (command, seed, git hash, wall time, meta-loss summary) and the
`MLPLOpt` architecture it belongs to.

A θ that is not bundled (a meta-training run's `theta.msgpack`) loads the same way:

    tx = hubopt.learned.from_theta_file("runs/small/theta.msgpack", num_steps=1000)

its `MLPLOpt` has the hidden widths its layers' shapes say and the variant its
`gen_id` names (`hubopt.learned.small_lopt.architecture.GEN_ID`).
"""

from __future__ import annotations

import json
from pathlib import Path

import jax.numpy as jnp
import optax

from hubopt._src.budget import check_num_steps
from hubopt.learned.checkpoint import read_checkpoint
from hubopt.learned.small_lopt.architecture import MLPLOpt

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
            "its theta.msgpack with hubopt.learned.from_theta_file(path, num_steps=...)."
        )


def load(name: str = "small") -> tuple[MLPLOpt, dict]:
    """(architecture, θ) of a bundled optimizer: its θ file, read as any θ file is
    (`load_theta_file`: widths from the layers' shapes, the variant from `gen_id`)."""
    _check_name(name)
    return load_theta_file(WEIGHTS_DIR / f"{name}.msgpack")


def _theta_arrays(checkpoint: dict) -> dict:
    return {
        layer: {k: jnp.asarray(v, jnp.float32) for k, v in arrays.items()}
        for layer, arrays in checkpoint["params"].items()
    }


def load_theta_file(path) -> tuple[MLPLOpt, dict]:
    """(architecture, θ) of the `MLPLOpt` θ checkpoint at `path` (a meta-training
    run's `theta.msgpack`): layers `layer0` … `layer{L}`, each {"w", "b"}; the
    hidden widths are the output widths of all but the last layer."""
    checkpoint = read_checkpoint(path)
    params = checkpoint["params"]
    layers = [f"layer{i}" for i in range(len(params))]
    if not layers or sorted(params) != sorted(layers):
        raise ValueError(
            f"{path} is not an MLPLOpt θ: its top-level keys are {sorted(params)}, "
            "expected layer0 … layerL"
        )
    for layer in layers:
        arrays = params[layer]
        if not isinstance(arrays, dict) or sorted(arrays) != ["b", "w"] or arrays["w"].ndim != 2:
            raise ValueError(f"{path} is not an MLPLOpt θ: {layer} must hold a 2-D 'w' and a 'b'")
    theta = _theta_arrays({"params": params})
    hidden = tuple(int(theta[layer]["w"].shape[1]) for layer in layers[:-1])
    lopt = MLPLOpt.for_gen_id(str(checkpoint.get("gen_id", "")), hidden, where=str(path))
    try:
        lopt._check_theta(theta)
    except ValueError as e:
        raise ValueError(f"{path} does not fit MLPLOpt's features: {e}") from None
    return lopt, theta


def from_theta_file(
    path, *, num_steps: int, warn_past_budget: bool = True, layout: str = "flat"
) -> optax.GradientTransformationExtraArgs:
    """The learned optimizer whose θ is the checkpoint at `path`, for `num_steps` steps
    (`warn_past_budget`, `layout`: as in `small`)."""
    num_steps = check_num_steps(num_steps)
    lopt, theta = load_theta_file(path)
    name = f"hubopt-theta({Path(path).name})"
    return lopt.optimizer(
        theta, num_steps, name=name, warn_past_budget=warn_past_budget, layout=layout
    )


def small(
    *, num_steps: int, warn_past_budget: bool = True, layout: str = "flat"
) -> optax.GradientTransformationExtraArgs:
    """hubopt's bundled learned optimizer, "small" (`weights/small.msgpack`, an `MLPLOpt`),
    for a run of `num_steps` steps.

    Its `update` needs params and the loss: `update(grads, state, params, value=loss)`.
    The first step past `num_steps` warns from the host unless `warn_past_budget=False`
    (for a loop that never runs past it: programs without host callbacks can be kept
    in JAX's persistent compilation cache). `layout="per_tensor"` for parameters
    sharded over devices (no tensor is gathered; `MLPLOpt.optimizer`).
    """
    num_steps = check_num_steps(num_steps)
    lopt, theta = load("small")
    return lopt.optimizer(
        theta, num_steps, name="small", warn_past_budget=warn_past_budget, layout=layout
    )
