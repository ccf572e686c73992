"""VeLO meta-parameters (theta) on disk: load, validate, save.

The tree (VELO_SPEC §5), for LSTM width H and K param inits:

    ff_mod_stack/~/w0__i  (K, c_i, 4)  i = 0..13, c_i = 1 or 3 (group widths)
    ff_mod_stack/~/b0 (K,4)  w1 (K,4,4)  b1 (K,4)  w2 (K,4,3)  b2 (K,3)
    lstm_init_state/hidden, cell          (1, H)
    rnn_params/linear, linear_1, linear_2 w (30, H), b (H,)
    rnn_params/rnn/linear                 w (2H, 4H), b (4H,)   ("rnn/linear" is ONE key)
    rnn_params/rnn_to_controls            w (H, K), b (K,)
    rnn_params/step_size                  w (H, 1), b (1,)

H and K are inferred from the tree, so the official VeLO file (H=512, K=256)
and small test files load alike. Gotcha: sorted as strings the first-layer keys
go w0__0, w0__1, w0__10, ..., w0__2: groups are mapped by integer suffix.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from hubopt.learned.checkpoint import CheckpointError, read_checkpoint, write_checkpoint

__all__ = [
    "GROUP_WIDTHS",
    "N_LSTM_FEATURES",
    "load_velo_theta",
    "read_velo_config",
    "save_velo_theta",
    "validate_velo_theta",
]

# Channels of the 14 per-parameter input groups (VELO_SPEC §4.7): 30 in all.
GROUP_WIDTHS = (1, 1, 1, 3, 1, 3, 1, 3, 1, 3, 3, 3, 3, 3)
N_LSTM_FEATURES = 30
MLP_HIDDEN = 4
MLP_OUT = 3
_RNN_LAYERS = ("linear", "linear_1", "linear_2", "rnn/linear", "rnn_to_controls", "step_size")


def rnn_weight_shapes(H: int, K: int) -> dict[str, tuple[int, int]]:
    """Weight shape (fan_in, fan_out) of each linear layer under ``rnn_params``."""
    return {
        "linear": (N_LSTM_FEATURES, H),
        "linear_1": (N_LSTM_FEATURES, H),
        "linear_2": (N_LSTM_FEATURES, H),
        "rnn/linear": (2 * H, 4 * H),
        "rnn_to_controls": (H, K),
        "step_size": (H, 1),
    }


def expected_shapes(H: int, K: int) -> dict[str, tuple[int, ...]]:
    """Path ('/'-joined, with 'rnn/linear' kept whole) -> shape, for LSTM width H, K inits."""
    shapes: dict[str, tuple[int, ...]] = {}
    ff = "ff_mod_stack/~/"
    for i, c in enumerate(GROUP_WIDTHS):
        shapes[f"{ff}w0__{i}"] = (K, c, MLP_HIDDEN)
    shapes[f"{ff}b0"] = (K, MLP_HIDDEN)
    shapes[f"{ff}w1"] = (K, MLP_HIDDEN, MLP_HIDDEN)
    shapes[f"{ff}b1"] = (K, MLP_HIDDEN)
    shapes[f"{ff}w2"] = (K, MLP_HIDDEN, MLP_OUT)
    shapes[f"{ff}b2"] = (K, MLP_OUT)
    shapes["lstm_init_state/hidden"] = (1, H)
    shapes["lstm_init_state/cell"] = (1, H)
    for name, (fan_in, fan_out) in rnn_weight_shapes(H, K).items():
        shapes[f"rnn_params/{name}/w"] = (fan_in, fan_out)
        shapes[f"rnn_params/{name}/b"] = (fan_out,)
    return shapes


def _flatten(tree: Mapping, where: str = "") -> dict[str, Any]:
    flat = {}
    for k, v in tree.items():
        path = f"{where}/{k}" if where else str(k)
        if isinstance(v, Mapping):
            flat.update(_flatten(v, path))
        else:
            flat[path] = v
    return flat


def _shape_of(x) -> tuple[int, ...] | None:
    shape = getattr(x, "shape", None)
    return tuple(shape) if shape is not None else None


def validate_velo_theta(theta: Mapping, *, source: str = "theta") -> tuple[dict, int, int]:
    """Checks every key and shape of a VeLO theta tree; returns (float32 theta, H, K).

    Raises `ValueError` naming ``source`` and the offending path. Values are
    returned as float32 numpy arrays in the same nested-dict layout.
    """
    if not isinstance(theta, Mapping):
        raise TypeError(f"{source}: a VeLO theta must be a nested dict, got {type(theta).__name__}")
    top = set(theta)
    want_top = {"ff_mod_stack", "lstm_init_state", "rnn_params"}
    if top != want_top:
        raise ValueError(
            f"{source}: not a VeLO theta: top-level keys {sorted(map(str, top))}, "
            f"expected {sorted(want_top)}"
        )
    flat = _flatten(theta)
    # "rnn/linear" is a single key containing '/', so the flattened path looks nested.
    try:
        H = int(_shape_of(theta["lstm_init_state"]["hidden"])[1])
        K = int(_shape_of(theta["ff_mod_stack"]["~"]["b0"])[0])
    except (KeyError, TypeError, IndexError):
        raise ValueError(
            f"{source}: cannot infer the LSTM width and the number of inits: need "
            "lstm_init_state/hidden of shape (1, H) and ff_mod_stack/~/b0 of shape (K, 4)"
        ) from None
    want = expected_shapes(H, K)
    missing = sorted(set(want) - set(flat))
    extra = sorted(set(flat) - set(want))
    if missing or extra:
        raise ValueError(
            f"{source}: VeLO theta (H={H}, K={K}) has missing keys {missing} "
            f"and unexpected keys {extra}"
        )
    for rnn in _RNN_LAYERS:  # a nested {"rnn": {"linear": ...}} would flatten the same way
        if rnn not in theta["rnn_params"]:
            raise ValueError(f"{source}: rnn_params has no key {rnn!r} (a single key)")
    out: dict = {}
    for path, shape in want.items():
        x = flat[path]
        got = _shape_of(x)
        if got != shape:
            raise ValueError(f"{source}: {path} has shape {got}, expected {shape} (H={H}, K={K})")
        arr = np.asarray(x)
        if arr.dtype.kind != "f":
            raise ValueError(f"{source}: {path} has dtype {arr.dtype}, expected float32")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{source}: {path} contains NaN or inf")
        parts = path.split("/")
        if parts[0] == "rnn_params":  # keep 'rnn/linear' whole
            parts = ["rnn_params", "/".join(parts[1:-1]), parts[-1]]
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = arr.astype(np.float32)
    return out, H, K


_GIN_LINE = re.compile(r"^([A-Za-z_][\w.]*)\s*=\s*(.+)$")
_SUPPORTED_GIN = {
    "HyperV2.lstm_hidden_size": "int",
    "HyperV2.param_inits": "int",
    "HyperV2.use_bugged_loss_features": "False",
}


def read_velo_config(path: str | os.PathLike) -> dict[str, int]:
    """Reads a VeLO ``config.gin``: returns {"lstm_hidden_size": H, "param_inits": K}.

    Only the ``HyperV2.*`` bindings VeLO uses are supported (the width, the
    number of inits and ``use_bugged_loss_features = False``); any other HyperV2
    binding, or bugged loss features, raises `ValueError`. Other scopes
    (``run_train.lopt = @HyperV2()``, ...) are ignored.
    """
    path = Path(path)
    text = path.read_text()
    text = re.sub(r"\\\n", " ", text)  # gin line continuations
    found: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _GIN_LINE.match(line)
        if not m:
            if line.startswith(("import ", "include ")):
                continue
            raise ValueError(f"{path}:{lineno}: cannot parse gin line {line!r}")
        name, value = m.group(1), m.group(2).strip()
        if not name.startswith("HyperV2."):
            continue
        if name not in _SUPPORTED_GIN:
            raise ValueError(
                f"{path}:{lineno}: unsupported binding {name} = {value}; hubopt's VeLO "
                f"supports only {sorted(_SUPPORTED_GIN)}"
            )
        found[name] = value
    if found.get("HyperV2.use_bugged_loss_features", "False") != "False":
        raise ValueError(f"{path}: use_bugged_loss_features must be False for VeLO")
    out = {}
    for key in ("lstm_hidden_size", "param_inits"):
        value = found.get(f"HyperV2.{key}")
        if value is None:
            raise ValueError(f"{path}: missing binding HyperV2.{key}")
        try:
            out[key] = int(value)
        except ValueError:
            raise ValueError(f"{path}: HyperV2.{key} = {value} is not an int") from None
    return out


def load_velo_theta(path: str | os.PathLike) -> dict:
    """Loads VeLO meta-parameters from a flax-msgpack ``params`` file (official format).

    Infers H and K from the tree and validates every key and shape; if a
    ``config.gin`` lies beside the file, its HyperV2 bindings must agree.
    Returns the nested dict of float32 numpy arrays.
    """
    path = Path(path)
    ckpt = read_checkpoint(path)
    try:
        theta, H, K = validate_velo_theta(ckpt["params"], source=str(path))
    except (TypeError, ValueError) as e:
        raise CheckpointError(str(e)) from None
    gin = path.parent / "config.gin"
    if gin.is_file():
        cfg = read_velo_config(gin)
        if (cfg["lstm_hidden_size"], cfg["param_inits"]) != (H, K):
            raise CheckpointError(
                f"{path}: theta has H={H}, K={K} but {gin} says "
                f"lstm_hidden_size={cfg['lstm_hidden_size']}, param_inits={cfg['param_inits']}"
            )
    return theta


def save_velo_theta(path: str | os.PathLike, theta: Mapping, *, gen_id: str = "", step=0) -> Path:
    """Validates ``theta`` and writes it in the official checkpoint format (atomically)."""
    checked, _, _ = validate_velo_theta(theta, source="save_velo_theta(theta)")
    return write_checkpoint(path, checked, gen_id=gen_id, step=step)
