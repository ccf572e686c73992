"""Flax-msgpack checkpoints of meta-parameters, read and written with msgpack + numpy only.

The format (VELO_SPEC §6) is the one learned_optimization wrote through flax:
one msgpack map ``{"gen_id": str, "params": <nested map>, "step": int}``.
Map keys are str; every array is a msgpack ExtType with code 1 (ndarray) or 3
(numpy scalar) whose payload is itself msgpack ``[shape, dtype_name, data]``,
``data`` being the raw C-order little-endian bytes. Arrays over 2**30 bytes are
split by flax into ``{"__msgpack_chunked_array__": True, "shape", "chunks"}``
maps; both directions handle that too. Pre-2022 flax stored namedtuples as
``{"name", "fields", "values"}`` maps; the reader turns those into plain
``{field: value}`` dicts.

`write_checkpoint` writes the same format (keys sorted at every level, as the
official writer did) to a temporary file in the target folder and renames it
into place, so a crash never leaves a half-written file and never destroys an
existing good one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from hubopt._src.atomic_write import write_atomic

__all__ = ["CheckpointError", "read_checkpoint", "write_checkpoint"]

EXT_NDARRAY = 1
EXT_COMPLEX = 2
EXT_NPSCALAR = 3
_CHUNK_KEY = "__msgpack_chunked_array__"
# flax's MAX_CHUNK_SIZE: arrays with more bytes than this are written in chunks.
MAX_CHUNK_BYTES = 2**30


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupt or not in the expected format."""


def _dtype_from_name(name: str) -> np.dtype:
    try:
        dtype = np.dtype(name)
    except TypeError:
        try:  # bfloat16 & co. live in ml_dtypes (a jax dependency), not numpy.
            import ml_dtypes

            dtype = np.dtype(getattr(ml_dtypes, name))
        except (ImportError, AttributeError, TypeError):
            raise CheckpointError(f"unknown array dtype {name!r}") from None
    if dtype.hasobject or dtype.fields is not None:
        raise CheckpointError(f"object/structured dtype {name!r} is not allowed")
    return dtype


def _decode_array(code: int, data: bytes) -> np.ndarray:
    try:
        payload = msgpack.unpackb(data, raw=True)
    except Exception as e:  # noqa: BLE001 - msgpack raises many types
        raise CheckpointError(f"corrupt array payload (ext {code}): {e}") from None
    if not (isinstance(payload, list | tuple) and len(payload) == 3):
        raise CheckpointError(f"array payload (ext {code}) is not [shape, dtype, data]")
    shape, name, buf = payload
    if isinstance(name, bytes):
        name = name.decode("ascii", "replace")
    if not isinstance(shape, list | tuple) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise CheckpointError(f"array payload has a bad shape {shape!r}")
    if not isinstance(buf, bytes):
        raise CheckpointError("array payload data is not msgpack bin")
    dtype = _dtype_from_name(name).newbyteorder("<")
    count = int(np.prod(shape, dtype=np.int64))
    if len(buf) != count * dtype.itemsize:
        raise CheckpointError(
            f"array of shape {tuple(shape)} and dtype {name} needs "
            f"{count * dtype.itemsize} bytes, payload has {len(buf)}"
        )
    # Copy: frombuffer views are read-only and would pin the whole file in memory.
    arr = np.frombuffer(buf, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))
    if code == EXT_NPSCALAR and arr.shape != ():
        raise CheckpointError(f"numpy scalar (ext 3) with non-scalar shape {arr.shape}")
    return arr


def _ext_hook(code: int, data: bytes):
    if code in (EXT_NDARRAY, EXT_NPSCALAR):
        return _decode_array(code, data)
    if code == EXT_COMPLEX:
        re_im = msgpack.unpackb(data)
        return complex(re_im[0], re_im[1])
    raise CheckpointError(f"unknown msgpack ext type {code} (expected 1, 2 or 3)")


def _normalise(node: Any, where: str) -> Any:
    """Plain dicts of arrays: old namedtuple maps and chunked arrays are resolved."""
    if not isinstance(node, dict):
        if isinstance(node, bool | int | float | complex):
            return np.asarray(node)
        if isinstance(node, np.ndarray | str):
            return node
        raise CheckpointError(f"unexpected {type(node).__name__} value at {where or '/'}")
    if node.get(_CHUNK_KEY) is True:
        try:
            shape = tuple(int(node["shape"][str(i)]) for i in range(len(node["shape"])))
            chunks = [node["chunks"][str(i)] for i in range(len(node["chunks"]))]
            return np.concatenate([np.ravel(c) for c in chunks]).reshape(shape)
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"bad chunked array at {where}: {e}") from None
    if set(node) == {"name", "fields", "values"} and isinstance(node["fields"], dict):
        # flax < 2022 namedtuple encoding: {"fields": {"0": name, ...}, "values": {"0": v}}.
        try:
            node = {
                node["fields"][str(i)]: node["values"][str(i)] for i in range(len(node["fields"]))
            }
        except KeyError as e:
            raise CheckpointError(f"bad old-style namedtuple map at {where}: {e}") from None
    out = {}
    for k, v in node.items():
        if not isinstance(k, str):
            raise CheckpointError(f"non-string map key {k!r} at {where or '/'}")
        out[k] = _normalise(v, f"{where}/{k}")
    return out


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Reads a flax-msgpack checkpoint: ``{"gen_id": str, "params": dict, "step": int}``.

    ``params`` is the nested dict of numpy arrays stored in the file. Raises
    `FileNotFoundError` for a missing file and `CheckpointError` (a `ValueError`)
    naming the file for a truncated, corrupt or foreign one.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {str(path)!r} does not exist")
    raw = path.read_bytes()

    def fail(what: str):
        return CheckpointError(f"{path}: not a valid flax-msgpack checkpoint: {what}")

    if not raw:
        raise fail("the file is empty")
    if raw[0] not in (0xDE, 0xDF) and not 0x80 <= raw[0] <= 0x8F:
        raise fail(f"it does not start with a msgpack map (first byte 0x{raw[0]:02x})")
    try:
        tree = msgpack.unpackb(raw, ext_hook=_ext_hook, raw=False, strict_map_key=False)
    except CheckpointError as e:
        raise fail(str(e)) from None
    except msgpack.exceptions.ExtraData:
        raise fail("trailing bytes after the msgpack map") from None
    except (ValueError, msgpack.exceptions.UnpackException) as e:
        # msgpack reports a short buffer as ValueError("Unpack failed: incomplete input").
        if "incomplete" in str(e) or isinstance(e, msgpack.exceptions.OutOfData):
            raise fail(f"the file is truncated ({len(raw)} bytes)") from None
        raise fail(f"corrupt msgpack data ({e})") from None
    except Exception as e:  # noqa: BLE001 - corrupt data can surface as anything
        raise fail(f"corrupt msgpack data ({type(e).__name__}: {e})") from None
    if not isinstance(tree, dict):
        raise fail(f"top level is a {type(tree).__name__}, expected a map")
    if set(tree) == {"0", "1", "2"}:
        raise fail(
            "it is an old (theta, gen_id, step) tuple checkpoint of learned_optimization "
            "(keys '0', '1', '2'), not a {gen_id, params, step} map"
        )
    if "params" not in tree:
        raise fail(f"no 'params' key (top-level keys: {sorted(map(str, tree))})")
    unknown = set(tree) - {"gen_id", "params", "step"}
    if unknown:
        raise fail(f"unexpected top-level keys {sorted(map(str, unknown))}")
    try:
        params = _normalise(tree["params"], "params")
    except CheckpointError as e:
        raise fail(str(e)) from None
    if not isinstance(params, dict):
        raise fail("'params' is not a map")
    gen_id = tree.get("gen_id", "")
    if isinstance(gen_id, bytes):
        gen_id = gen_id.decode("utf-8", "replace")
    if not isinstance(gen_id, str):
        raise fail(f"'gen_id' is a {type(gen_id).__name__}, expected str")
    step = tree.get("step", 0)
    if isinstance(step, np.ndarray):
        if step.shape != () or step.dtype.kind not in "iu":
            raise fail(f"'step' is an array of shape {step.shape} and dtype {step.dtype}")
        step = int(step)
    if isinstance(step, bool) or not isinstance(step, int):
        raise fail(f"'step' is a {type(step).__name__}, expected an int")
    return {"gen_id": gen_id, "params": params, "step": step}


def _encode_array(arr: np.ndarray) -> msgpack.ExtType:
    if arr.dtype.hasobject or arr.dtype.fields is not None:
        raise TypeError(f"cannot write object/structured dtype {arr.dtype}")
    le = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
    payload = msgpack.packb((list(arr.shape), arr.dtype.name, le.tobytes("C")), use_bin_type=True)
    return msgpack.ExtType(EXT_NDARRAY, payload)


def _encode_tree(node: Any, where: str) -> Any:
    if isinstance(node, Mapping):
        out = {}
        for k in sorted(node, key=lambda k: (not isinstance(k, str), str(k))):
            if not isinstance(k, str):
                raise TypeError(f"params keys must be str, got {k!r} at {where or '/'}")
            out[k] = _encode_tree(node[k], f"{where}/{k}")
        return out
    if node is None or isinstance(node, str | bytes | list | tuple):
        raise TypeError(
            f"params leaves must be arrays, got {type(node).__name__} at {where or '/'}"
        )
    arr = np.asarray(node)  # numpy, jax arrays and Python numbers
    if arr.nbytes > MAX_CHUNK_BYTES:
        per_chunk = max(1, MAX_CHUNK_BYTES // arr.dtype.itemsize)
        flat = arr.reshape(-1)
        chunks = [flat[i : i + per_chunk] for i in range(0, flat.size, per_chunk)]
        return {
            _CHUNK_KEY: True,
            "chunks": {str(i): _encode_array(c) for i, c in enumerate(chunks)},
            "shape": {str(i): int(d) for i, d in enumerate(arr.shape)},
        }
    return _encode_array(arr)


def encode_checkpoint(params: Mapping, *, gen_id: str = "", step=0) -> bytes:
    """The bytes `write_checkpoint` writes (keys sorted at every level)."""
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a nested dict of arrays, got {type(params).__name__}")
    if not isinstance(gen_id, str):
        raise TypeError(f"gen_id must be a str, got {type(gen_id).__name__}")
    if (
        isinstance(step, np.ndarray | np.generic)
        or hasattr(step, "__jax_array__")
        or (type(step).__module__.startswith("jax"))
    ):
        step_arr = np.asarray(step)
        if step_arr.shape != () or step_arr.dtype.kind not in "iu":
            raise TypeError(f"step must be an integer scalar, got {step_arr.dtype}{step_arr.shape}")
        step_value: Any = _encode_array(step_arr)  # like a traced JAX step in the official files
    elif isinstance(step, int) and not isinstance(step, bool):
        step_value = step
    else:
        raise TypeError(f"step must be an int, got {type(step).__name__}")
    tree = {"gen_id": gen_id, "params": _encode_tree(params, "params"), "step": step_value}
    return msgpack.packb(tree, use_bin_type=True)


def write_checkpoint(path: str | os.PathLike, params: Mapping, *, gen_id: str = "", step=0) -> Path:
    """Writes ``params`` (a nested dict of arrays) as a flax-msgpack checkpoint, atomically.

    ``step`` is written as a plain msgpack int, or as a 0-d ext-1 array when it is
    a numpy/JAX integer scalar. The bytes go to a temporary file in the same
    folder, are fsynced and renamed over ``path``; on any error the temporary
    file is removed and an existing ``path`` is left untouched.
    """
    path = Path(path)
    data = encode_checkpoint(params, gen_id=gen_id, step=step)  # fail before touching disk
    write_atomic(path, data)
    return path
