"""CIFAR-10 and CIFAR-100 from their python batches, read without running pickled code.

The "python version" of CIFAR (cifar-10-python.tar.gz, cifar-100-python.tar.gz,
unpacked into a folder of the user's) is a set of pickles, each a dict:

    CIFAR-10   data_batch_1 .. data_batch_5 (10,000 images each), test_batch
               {b"data": (10000, 3072) uint8, b"labels": [int, ...], ...}
    CIFAR-100  train (50,000), test (10,000)
               {b"data": (N, 3072) uint8, b"fine_labels": [...], b"coarse_labels": [...]}

Each row of `data` is a 32×32 RGB image, channel-major: 1024 red values
(row-major), then 1024 green, then 1024 blue. Labels are 0–9 (CIFAR-10),
0–99 (fine) or 0–19 (coarse).

A pickle can run any code, so the batches are read with
`hubopt.tasks.data.safe_pickle.restricted_load`, which resolves only the
globals that numpy arrays pickle through, each mapped to a stand-in of ours:

    numpy.core.multiarray._reconstruct   (numpy 2 writes numpy._core.multiarray)
    numpy.ndarray                        only as _reconstruct's first argument
    numpy.dtype                          numeric dtypes only (bool, int, uint, float)

The stand-in array is rebuilt from its pickled state with `np.frombuffer`
after checking the shape, the dtype and that the raw bytes are exactly as many
as they imply; object arrays (whose state is a list of pickled objects) and
any other global (`os.system`, ...) are refused with an error naming it. The
real batches were written by Python 2, whose byte strings unpickle as `bytes`
(`encoding="bytes"`, hence the bytes keys).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from hubopt.tasks.data.safe_pickle import restricted_load

__all__ = [
    "CIFAR10_TEST",
    "CIFAR10_TRAIN",
    "CifarFormatError",
    "load_cifar10",
    "load_cifar100",
    "read_batch",
]

SIDE = 32
IMAGE_BYTES = 3 * SIDE * SIDE  # 3072
CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST = "test_batch"
CIFAR100_TRAIN, CIFAR100_TEST = "train", "test"
CIFAR100_LABELS = {"fine": ("fine_labels", 100), "coarse": ("coarse_labels", 20)}
# dtypes a CIFAR batch may hold: numeric kinds only (never object, void, str)
NUMERIC_KINDS = frozenset("biuf")
MAX_ELEMENTS = 1 << 31


class CifarFormatError(ValueError):
    """The file is not a well-formed CIFAR python batch."""


# ------------------------------------------------------------ numpy stand-ins


class _NDArrayToken:
    """Stands in for `numpy.ndarray`: only a marker for `_reconstruct`'s first argument."""

    def __repr__(self) -> str:
        return "numpy.ndarray (stand-in)"


_NDARRAY = _NDArrayToken()


def _text(value: Any, what: str) -> str:
    if isinstance(value, bytes):
        return value.decode("ascii")
    if isinstance(value, str):
        return value
    raise CifarFormatError(f"pickled {what} is a {type(value).__name__}, not a string")


class _PickledDType:
    """`numpy.dtype(spec, align, copy)` and its pickled state, numeric dtypes only."""

    def __init__(self, spec: Any, align: Any = False, copy: Any = True):
        dtype = np.dtype(_text(spec, "dtype"))
        if dtype.kind not in NUMERIC_KINDS or dtype.fields is not None or dtype.subdtype:
            raise CifarFormatError(f"refusing a pickled array of dtype {dtype!r} (not numeric)")
        self.dtype = dtype

    def __setstate__(self, state: Any) -> None:
        # (version, byte order, subarray, names, fields, elsize, alignment, flags)
        if not isinstance(state, tuple) or len(state) < 5 or any(s is not None for s in state[2:5]):
            raise CifarFormatError(
                f"refusing a pickled dtype state {state!r:.80} (not a plain one)"
            )
        order = _text(state[1], "byte order")
        if order not in ("<", ">", "|", "="):
            raise CifarFormatError(f"pickled dtype has byte order {order!r}")
        if order != "|":
            self.dtype = self.dtype.newbyteorder(order)


class _PickledArray:
    """What `_reconstruct(ndarray, (0,), b"b")` makes: filled in by its pickled state."""

    def __init__(self):
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 5:
            state = state[1:]  # (version, shape, dtype, is_fortran, raw)
        if not isinstance(state, tuple) or len(state) != 4:
            raise CifarFormatError("a pickled array's state is not (shape, dtype, fortran, data)")
        shape, dtype, fortran, raw = state
        if not isinstance(dtype, _PickledDType):
            raise CifarFormatError("a pickled array's dtype is not a numpy dtype")
        if not isinstance(shape, tuple) or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape
        ):
            raise CifarFormatError(f"a pickled array's shape {shape!r:.80} is not a shape")
        count = math.prod(shape)
        if count > MAX_ELEMENTS:
            raise CifarFormatError(f"a pickled array of shape {shape} is implausibly large")
        if isinstance(raw, str):  # a Python 2 byte string read with encoding="latin1"
            raw = raw.encode("latin1")
        if not isinstance(raw, bytes | bytearray):
            raise CifarFormatError(
                f"a pickled array's data is a {type(raw).__name__}, not bytes (object arrays "
                "are refused)"
            )
        if len(raw) != count * dtype.dtype.itemsize:
            raise CifarFormatError(
                f"a pickled array of shape {shape} and dtype {dtype.dtype} needs "
                f"{count * dtype.dtype.itemsize} bytes, the pickle holds {len(raw)}"
            )
        flat = np.frombuffer(raw, dtype.dtype, count)
        self.array = flat.reshape(shape, order="F" if fortran else "C").astype(
            dtype.dtype.newbyteorder("="), order="C"
        )


def _reconstruct(cls: Any, shape: Any, typecode: Any) -> _PickledArray:
    if cls is not _NDARRAY:
        raise CifarFormatError(f"_reconstruct of {cls!r:.60}: only numpy.ndarray is allowed")
    return _PickledArray()


ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _PickledDType,
}
# Python 2's byte strings (the real batches' keys and array data) unpickle as bytes
ENCODING = "bytes"


def _finish(obj: Any, what: str) -> Any:
    """The unpickled object with every stand-in replaced by the array it rebuilt."""
    if isinstance(obj, _PickledArray):
        if obj.array is None:
            raise CifarFormatError(f"{what}: a pickled array has no data")
        return obj.array
    if isinstance(obj, _PickledDType | _NDArrayToken):
        raise CifarFormatError(f"{what}: a bare numpy type where data was expected")
    if isinstance(obj, dict):
        return {k: _finish(v, what) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_finish(v, what) for v in obj)
    return obj


def load_pickle(path: str | Path) -> Any:
    """One CIFAR pickle, numpy arrays rebuilt by the stand-ins above; any other global
    is a `safe_pickle.RefusedGlobalError` naming it, a short file a `TruncatedPickleError`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no CIFAR batch at {path}")
    with path.open("rb") as stream:
        try:
            obj = restricted_load(stream, ALLOWED, what=str(path), encoding=ENCODING)
        except CifarFormatError as err:
            raise CifarFormatError(f"{path}: {err}") from None
        except (TypeError, AttributeError, ValueError) as err:  # a stand-in misused
            raise CifarFormatError(f"{path}: not a CIFAR batch ({err})") from None
    return _finish(obj, str(path))


# ---------------------------------------------------------------- batches


def _field(batch: dict, key: str) -> Any:
    for k in (key.encode("ascii"), key):
        if k in batch:
            return batch[k]
    raise KeyError(key)


def read_batch(path: str | Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Images `(N, 32, 32, 3) uint8` and labels `(N,) int64` of one CIFAR batch, checked:
    3,072 bytes per image, one label per image, every label in [0, num_classes)."""
    batch = load_pickle(path)
    if not isinstance(batch, dict):
        raise CifarFormatError(f"{path}: a CIFAR batch is a dict, got {type(batch).__name__}")
    try:
        data, labels = _field(batch, "data"), _field(batch, label_key)
    except KeyError as err:
        keys = sorted(k.decode() if isinstance(k, bytes) else str(k) for k in batch)
        raise CifarFormatError(f"{path}: no {err.args[0]!r} in the batch (keys: {keys})") from None
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        raise CifarFormatError(f"{path}: data must be a uint8 array, got {type(data).__name__}")
    if data.ndim != 2 or data.shape[1] != IMAGE_BYTES:
        raise CifarFormatError(
            f"{path}: data must be (N, {IMAGE_BYTES}) (32×32×3 bytes an image), got {data.shape}"
        )
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or len(labels) != len(data):
        raise CifarFormatError(
            f"{path}: {label_key} must be {len(data)} integers, one per image, got "
            f"{labels.shape} {labels.dtype}"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise CifarFormatError(
            f"{path}: {label_key} must lie in [0, {num_classes}), got "
            f"{labels.min()}..{labels.max()}"
        )
    images = data.reshape(-1, 3, SIDE, SIDE).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels.astype(np.int64)


def _read_all(folder: Path, names, label_key: str, num_classes: int):
    parts = [read_batch(folder / name, label_key, num_classes) for name in names]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _folder(folder: str | Path, names) -> Path:
    folder = Path(folder)
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"CIFAR batches missing from {folder}: {', '.join(missing)} (unpack the python "
            "version, cifar-10-python.tar.gz or cifar-100-python.tar.gz, into it)"
        )
    return folder


def load_cifar10(folder: str | Path) -> dict[str, Any]:
    """CIFAR-10 from `folder`: `x_train (N, 32, 32, 3) uint8` (50,000 in the real set),
    `y_train`, `x_test`, `y_test` (10,000), `num_classes` 10."""
    folder = _folder(folder, (*CIFAR10_TRAIN, CIFAR10_TEST))
    x_train, y_train = _read_all(folder, CIFAR10_TRAIN, "labels", 10)
    x_test, y_test = _read_all(folder, (CIFAR10_TEST,), "labels", 10)
    return {
        "x_train": x_train,
        "y_train": y_train,
        "x_test": x_test,
        "y_test": y_test,
        "num_classes": 10,
    }


def load_cifar100(folder: str | Path, labels: str = "fine") -> dict[str, Any]:
    """CIFAR-100 from `folder` (`train`, `test`) with its fine (100) or coarse (20)
    labels: the keys of `load_cifar10`."""
    if labels not in CIFAR100_LABELS:
        raise ValueError(f"labels must be one of {sorted(CIFAR100_LABELS)}, got {labels!r}")
    key, num_classes = CIFAR100_LABELS[labels]
    folder = _folder(folder, (CIFAR100_TRAIN, CIFAR100_TEST))
    x_train, y_train = _read_all(folder, (CIFAR100_TRAIN,), key, num_classes)
    x_test, y_test = _read_all(folder, (CIFAR100_TEST,), key, num_classes)
    return {
        "x_train": x_train,
        "y_train": y_train,
        "x_test": x_test,
        "y_test": y_test,
        "num_classes": num_classes,
    }
