"""IDX files (LeCun's MNIST format), and Fashion-MNIST as Debian ships it.

An IDX file is a big-endian header, then the array in C order:

    bytes 0–1   0x00 0x00
    byte  2     the element type: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
                0x0D float32, 0x0E float64
    byte  3     the number of dimensions n
    4·n bytes   each dimension's size, a big-endian uint32
    the rest    the elements, big-endian

`read_idx(path)` reads one (gzip-compressed when the name ends in `.gz`),
checking the header and that the data is exactly as long as the header says
before it allocates anything. `fashion_mnist()` reads the four files of
Debian's `dataset-fashion-mnist` (60,000 training and 10,000 test images of
28×28, labels 0–9) from `FASHION_MNIST_DIR`.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

__all__ = [
    "FASHION_MNIST_DIR",
    "FASHION_MNIST_PACKAGE",
    "IdxFormatError",
    "fashion_mnist",
    "read_idx",
]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_PACKAGE = "dataset-fashion-mnist"
FASHION_MNIST_FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}
IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
MAX_DIMS = 8


class IdxFormatError(ValueError):
    """The bytes are not a well-formed IDX file."""


def parse_idx(raw: bytes, what: str = "IDX data") -> np.ndarray:
    """The array held by the IDX bytes `raw` (native byte order, a fresh copy)."""
    if len(raw) < 4:
        raise IdxFormatError(f"{what}: {len(raw)} bytes, shorter than an IDX header")
    zero, code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0:
        raise IdxFormatError(f"{what}: not an IDX file (its first two bytes are not zero)")
    if code not in IDX_DTYPES:
        raise IdxFormatError(f"{what}: unknown IDX element type 0x{code:02X}")
    if not 1 <= ndim <= MAX_DIMS:
        raise IdxFormatError(f"{what}: {ndim} dimensions (IDX files here have 1 to {MAX_DIMS})")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IdxFormatError(f"{what}: the header of {ndim} dimensions is cut short (truncated?)")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = IDX_DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise IdxFormatError(
            f"{what}: the header says shape {shape} ({expected} bytes of data), the file holds "
            f"{len(raw) - header} (truncated or not one IDX array?)"
        )
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(path: str | Path) -> np.ndarray:
    """The array in the IDX file at `path` (gunzipped first if its name ends in `.gz`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no IDX file at {path}")
    if path.name.endswith(".gz"):
        try:
            with gzip.open(path, "rb") as stream:
                raw = stream.read()
        except (OSError, EOFError) as error:  # bad gzip header, or cut short
            raise IdxFormatError(f"{path}: not a readable gzip file ({error})") from None
    else:
        raw = path.read_bytes()
    return parse_idx(raw, str(path))


def fashion_mnist(folder: str | Path = FASHION_MNIST_DIR) -> dict[str, np.ndarray]:
    """Fashion-MNIST: `x_train` (60000, 28, 28) uint8, `y_train` (60000,) uint8, `x_test`
    (10000, 28, 28), `y_test` (10000,).

    Missing files are a `FileNotFoundError` naming the Debian package that has them.
    """
    folder = Path(folder)
    missing = [name for name in FASHION_MNIST_FILES.values() if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST is missing from {folder} ({', '.join(missing)}); it comes with the "
            f"Debian package {FASHION_MNIST_PACKAGE} (`sudo apt-get install "
            f"{FASHION_MNIST_PACKAGE}`, which `make` runs where it can)"
        )
    data = {key: read_idx(folder / name) for key, name in FASHION_MNIST_FILES.items()}
    for split in ("train", "test"):
        x, y = data[f"x_{split}"], data[f"y_{split}"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise IdxFormatError(
                f"{folder}: {split} images {x.shape} and labels {y.shape} do not match"
            )
    return data
