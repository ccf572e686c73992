"""PyTorch checkpoints (state dicts) as numpy arrays, without torch and without running code.

`load_state_dict(path) -> {name: np.ndarray}` reads both formats `torch.save`
has written:

    legacy (torch < 1.6)  five pickles in a row: the magic number
                          0x1950a86a20f9469cfc6c, the protocol version 1001, a
                          dict of system info (endianness, type sizes), the
                          state dict itself, and the list of storage keys; then,
                          for each key in that order, the storage's element
                          count (little-endian int64) and its raw bytes.
    zip (torch >= 1.6)    a zip archive holding `<prefix>/data.pkl` (the state
                          dict) and each storage's raw bytes in
                          `<prefix>/data/<key>` (and, from torch 1.10 on, a
                          `<prefix>/byteorder` file, "little" or "big").

In the state dict a tensor is a call `torch._utils._rebuild_tensor_v2(storage,
storage_offset, size, stride, requires_grad, backward_hooks)` whose storage is
a persistent id

    legacy  ("storage", torch.<Kind>Storage, key, location, numel, view)
            view: None, or (view_key, offset, view_numel) for a slice of the storage
    zip     ("storage", torch.<Kind>Storage, key, location, numel)

and element (i₀, i₁, …) of the tensor is element `storage_offset + Σ iₖ·strideₖ`
of its storage.

The pickles are read with `hubopt.tasks.data.safe_pickle.restricted_load`: the
only globals resolved are `collections.OrderedDict`, the tensor rebuild functions
(`torch._utils._rebuild_tensor_v2`, `_rebuild_parameter`) and the typed storage
classes (`torch.FloatStorage`, ...), each mapped to a stand-in of ours that only
records what the pickle says; the arrays are built afterwards, once every
storage's bytes are read and every tensor is checked to lie inside its storage.
Anything else (say `os.system`) is refused before it is called, naming the
global.

Errors (all raised before any array is returned):

    RefusedGlobalError     a global beyond those a state dict needs (a pickle
                           that would run code, or a whole pickled nn.Module)
    TruncatedPickleError   the file ends early (an empty or cut-off file)
    CheckpointFormatError  anything else that is not a well-formed state dict:
                           a bad magic number or zip, a tensor that overruns its
                           storage, a storage of the wrong length, garbage bytes
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from hubopt.tasks.data.safe_pickle import (
    RefusedGlobalError,
    TruncatedPickleError,
    restricted_load,
)

__all__ = [
    "CheckpointFormatError",
    "RefusedGlobalError",
    "TruncatedPickleError",
    "load_state_dict",
]

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
MAX_DIMS = 32  # numpy's limit is 64; no state dict comes near either
MAX_PICKLE_BYTES = 1 << 28  # a zip's data.pkl holds no tensor data; 256 MiB is generous


class CheckpointFormatError(ValueError):
    """The file is not a PyTorch state dict this reader understands."""


def _bfloat16():
    import ml_dtypes  # ships with jax

    return ml_dtypes.bfloat16


STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": None,  # ml_dtypes.bfloat16, resolved on use
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    """Stands in for `torch.<Kind>Storage` in the pickle: just its dtype."""

    def __init__(self, kind: str):
        self.kind = kind

    @property
    def dtype(self) -> np.dtype:
        dtype = STORAGE_DTYPES[self.kind]
        return np.dtype(_bfloat16() if dtype is None else dtype)


class _Storage:
    """A flat storage of `numel` elements; `data` is filled in once read."""

    def __init__(self, dtype: np.dtype, numel: int, key: str):
        self.dtype, self.numel, self.key = dtype, numel, key
        self.data: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize


def _int(value, what: str, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise CheckpointFormatError(f"{what}: a tensor's {field} is {value!r:.40}, not an int")
    return value


class _PendingTensor:
    """A tensor as the pickle describes it; its storage may not be read yet (the
    legacy format stores the data after the pickle)."""

    def __init__(self, storage, offset, size, stride, what: str):
        if isinstance(storage, tuple):  # a legacy view: (root storage, view offset)
            storage, view_offset = storage
        else:
            view_offset = 0
        if not isinstance(storage, _Storage):
            raise CheckpointFormatError(
                f"{what}: a tensor is built from {type(storage).__name__}, not a storage"
            )
        if not isinstance(size, tuple | list) or not isinstance(stride, tuple | list):
            raise CheckpointFormatError(f"{what}: a tensor's size and stride must be tuples")
        if len(size) != len(stride) or len(size) > MAX_DIMS:
            raise CheckpointFormatError(
                f"{what}: a tensor of size {tuple(size)!r:.80} has stride {tuple(stride)!r:.80}"
            )
        self.storage = storage
        self.offset = view_offset + _int(offset, what, "storage offset")
        self.size = tuple(_int(n, what, "size") for n in size)
        self.stride = tuple(_int(s, what, "stride") for s in stride)
        if self.offset < 0 or any(n < 0 for n in self.size) or any(s < 0 for s in self.stride):
            raise CheckpointFormatError(
                f"{what}: a tensor has a negative offset, size or stride (offset {self.offset}, "
                f"size {self.size}, stride {self.stride})"
            )

    def check_bounds(self, what: str) -> None:
        """Refuses a tensor whose elements do not all lie inside its storage."""
        if any(n == 0 for n in self.size):
            return  # no elements: nothing to read
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride, strict=True))
        if last >= self.storage.numel:
            raise CheckpointFormatError(
                f"{what}: a tensor of size {self.size}, stride {self.stride} at offset "
                f"{self.offset} overruns its storage {self.storage.key} of "
                f"{self.storage.numel} elements"
            )

    def materialize(self, what: str) -> np.ndarray:
        base = self.storage
        if base.data is None:
            raise CheckpointFormatError(f"{what}: storage {base.key} has no data")
        if any(n == 0 for n in self.size):
            return np.zeros(self.size, base.dtype)
        self.check_bounds(what)
        itemsize = base.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            base.data[self.offset :],
            shape=self.size,
            strides=tuple(s * itemsize for s in self.stride),
            writeable=False,
        )
        return np.array(view, order="C")  # a compact copy, independent of the storage


def _allowed(what: str) -> dict[tuple[str, str], Any]:
    def rebuild_tensor_v2(storage, storage_offset, size, stride, *rest):
        del rest  # requires_grad, backward hooks, metadata: nothing an array needs
        return _PendingTensor(storage, storage_offset, size, stride, what)

    def rebuild_parameter(data, *rest):
        del rest  # requires_grad, backward hooks
        if not isinstance(data, _PendingTensor):
            raise CheckpointFormatError(f"{what}: a parameter wraps {type(data).__name__}")
        return data

    allowed: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): rebuild_parameter,
    }
    for kind in STORAGE_DTYPES:
        allowed[("torch", kind)] = _StorageType(kind)
    return allowed


def _unpickle(f, allowed, what: str, persistent_load=None):
    """`restricted_load`, with every sign of a malformed file as one of our error types."""
    try:
        return restricted_load(f, allowed, persistent_load=persistent_load, what=what)
    except (RefusedGlobalError, TruncatedPickleError, CheckpointFormatError):
        raise
    except (
        pickle.UnpicklingError,
        TypeError,
        ValueError,
        AttributeError,
        IndexError,
        KeyError,
        OverflowError,
        MemoryError,
        RecursionError,
        UnicodeDecodeError,
    ) as err:
        raise CheckpointFormatError(
            f"{what}: not a well-formed PyTorch state dict ({type(err).__name__}: {err})"
        ) from None


def _pending(obj, out: list) -> None:
    """Collects every `_PendingTensor` in a (nested) pickled object."""
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, _PendingTensor):
            out.append(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)


def _materialize(obj, what: str, memo: dict):
    key = id(obj)
    if key in memo:
        return memo[key]
    if isinstance(obj, _PendingTensor):
        out = obj.materialize(what)
    elif isinstance(obj, dict):
        out = OrderedDict() if isinstance(obj, OrderedDict) else {}
        for k, v in obj.items():
            out[k] = _materialize(v, what, memo)
    elif isinstance(obj, list | tuple):
        out = type(obj)(_materialize(v, what, memo) for v in obj)
    else:
        out = obj
    memo[key] = out
    return out


def _finish(result, what: str) -> dict[str, np.ndarray]:
    """Checks the unpickled state dict and builds its arrays."""
    if not isinstance(result, dict):
        raise CheckpointFormatError(
            f"{what}: holds a {type(result).__name__}, not a state dict (a mapping of tensors)"
        )
    tensors: list[_PendingTensor] = []
    _pending(result, tensors)
    for tensor in tensors:
        tensor.check_bounds(what)
    try:
        return _materialize(result, what, {})
    except RecursionError:
        raise CheckpointFormatError(f"{what}: nested too deeply for a state dict") from None


def _storage_from_pid(pid, storages: dict, what: str):
    if not isinstance(pid, tuple) or len(pid) not in (5, 6) or pid[0] != "storage":
        raise CheckpointFormatError(f"{what}: unexpected persistent id {pid!r:.80}")
    _, storage_type, key, _location, numel, *view = pid
    view = view[0] if view else None  # legacy: None, or (view key, offset, view numel)
    if not isinstance(storage_type, _StorageType):
        raise CheckpointFormatError(f"{what}: storage of unknown type {storage_type!r:.40}")
    if isinstance(numel, bool) or not isinstance(numel, int) or numel < 0:
        raise CheckpointFormatError(f"{what}: storage {key!r:.40} of {numel!r:.40} elements")
    key = str(key)
    storage = storages.get(key)
    if storage is None:
        storage = storages[key] = _Storage(storage_type.dtype, numel, key)
    elif storage.dtype != storage_type.dtype or storage.numel != numel:
        raise CheckpointFormatError(
            f"{what}: storage {key} is declared as {storage.numel} × {storage.dtype} and as "
            f"{numel} × {storage_type.dtype}"
        )
    if view is None:
        return storage
    if not (isinstance(view, tuple) and len(view) == 3):
        raise CheckpointFormatError(f"{what}: unexpected storage view {view!r:.80}")
    view_offset = view[1]
    if isinstance(view_offset, bool) or not isinstance(view_offset, int) or view_offset < 0:
        raise CheckpointFormatError(f"{what}: storage view at offset {view_offset!r:.40}")
    return (storage, view_offset)


def _load_legacy(raw: bytes, what: str) -> dict[str, np.ndarray]:
    f = io.BytesIO(raw)  # in memory: a huge length in the pickle cannot allocate more
    magic = _unpickle(f, {}, what)
    if magic != LEGACY_MAGIC or isinstance(magic, bool):
        raise CheckpointFormatError(
            f"{what}: not a PyTorch checkpoint (no zip archive, and the first pickle is not the "
            "legacy format's magic number)"
        )
    protocol = _unpickle(f, {}, what)
    if protocol != LEGACY_PROTOCOL:
        raise CheckpointFormatError(f"{what}: unsupported legacy protocol {protocol!r:.40}")
    sys_info = _unpickle(f, {}, what)
    if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
        raise CheckpointFormatError(f"{what}: only little-endian checkpoints are supported")
    storages: dict[str, _Storage] = {}
    result = _unpickle(
        f, _allowed(what), what, persistent_load=lambda pid: _storage_from_pid(pid, storages, what)
    )
    keys = _unpickle(f, {}, what)
    if (
        not isinstance(keys, list)
        or len(keys) != len(storages)
        or set(map(str, keys)) != set(storages)
    ):
        raise CheckpointFormatError(f"{what}: the storage key list does not match the tensors")
    for key in keys:
        storage = storages[str(key)]
        header = f.read(8)
        if len(header) != 8:
            raise TruncatedPickleError(f"{what}: ended before storage {key} (truncated?)")
        (numel,) = struct.unpack("<q", header)
        if numel != storage.numel:
            raise CheckpointFormatError(
                f"{what}: storage {key} holds {numel} elements, the pickle says {storage.numel}"
            )
        if storage.nbytes > len(raw) - f.tell():
            raise TruncatedPickleError(
                f"{what}: ended inside storage {key} ({storage.nbytes} bytes, "
                f"{len(raw) - f.tell()} left; truncated?)"
            )
        storage.data = np.frombuffer(f.read(storage.nbytes), storage.dtype)
    return _finish(result, what)


def _load_zip(raw: bytes, what: str) -> dict[str, np.ndarray]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(raw))
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise CheckpointFormatError(
            f"{what}: a damaged or truncated zip checkpoint ({err})"
        ) from None
    with archive:
        infos = {info.filename: info for info in archive.infolist()}
        pickles = [n for n in infos if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise CheckpointFormatError(
                f"{what}: a zip checkpoint holds one data.pkl, this one {len(pickles)}"
            )
        prefix = pickles[0][: -len("data.pkl")]

        def member(name: str, expected_size: int | None = None) -> bytes:
            info = infos.get(name)
            if info is None:
                raise CheckpointFormatError(f"{what}: {name} missing from the archive")
            if expected_size is not None and info.file_size != expected_size:
                raise CheckpointFormatError(
                    f"{what}: {name} has {info.file_size} bytes, expected {expected_size}"
                )
            if info.file_size > max(MAX_PICKLE_BYTES, expected_size or 0):
                raise CheckpointFormatError(f"{what}: {name} is implausibly large")
            try:
                return archive.read(info)
            except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as err:
                raise CheckpointFormatError(
                    f"{what}: damaged archive member {name} ({err})"
                ) from None

        byteorder = prefix + "byteorder"
        if byteorder in infos and member(byteorder).strip() != b"little":
            raise CheckpointFormatError(f"{what}: only little-endian checkpoints are supported")
        storages: dict[str, _Storage] = {}
        result = _unpickle(
            io.BytesIO(member(pickles[0])),
            _allowed(what),
            what,
            persistent_load=lambda pid: _storage_from_pid(pid, storages, what),
        )
        for key, storage in storages.items():
            data = member(f"{prefix}data/{key}", storage.nbytes)
            storage.data = np.frombuffer(data, storage.dtype)
    return _finish(result, what)


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of the PyTorch state dict saved at `path` (legacy or zip format).

    Returns the checkpoint's top-level mapping (an `OrderedDict` as torch saved
    it) with every tensor as a numpy array (a fresh, contiguous copy; other
    entries, such as ints, as they are). Raises `RefusedGlobalError` for any
    pickle global beyond those a state dict needs, and `TruncatedPickleError`
    or `CheckpointFormatError` for a truncated or damaged file (see the module
    docstring); a missing file is the usual `FileNotFoundError`.
    """
    path = Path(path)
    what = str(path)
    raw = path.read_bytes()
    if not raw:
        raise TruncatedPickleError(f"{what}: an empty file, not a PyTorch checkpoint")
    if raw[:2] == b"PK":
        return _load_zip(raw, what)
    return _load_legacy(raw, what)
