"""IDX files: hand-written bytes of every element type, malformed files, and the real
Fashion-MNIST that Debian's dataset-fashion-mnist installs."""

import gzip
import struct

import numpy as np
import pytest

from hubopt.tasks.data import idx


def _idx(code: int, shape: tuple[int, ...], payload: bytes) -> bytes:
    return bytes([0, 0, code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape) + payload


@pytest.mark.parametrize(
    "code, fmt, values, dtype",
    [
        (0x08, "B", [0, 1, 127, 255, 7, 200], np.uint8),
        (0x09, "b", [-128, -1, 0, 1, 100, 127], np.int8),
        (0x0B, "h", [-32768, -2, 0, 3, 1000, 32767], np.int16),
        (0x0C, "i", [-(2**31), -5, 0, 6, 70000, 2**31 - 1], np.int32),
        (0x0D, "f", [-1.5, 0.0, 0.25, 3.0, 1e10, -2.0], np.float32),
        (0x0E, "d", [-1.5, 0.0, 0.1, 3.0, 1e300, -2.0], np.float64),
    ],
)
def test_each_element_type_parses_big_endian_in_c_order(code, fmt, values, dtype):
    raw = _idx(code, (2, 3), struct.pack(f">6{fmt}", *values))
    out = idx.parse_idx(raw)
    assert out.shape == (2, 3) and out.dtype == np.dtype(dtype)
    assert out.dtype.isnative
    np.testing.assert_array_equal(out, np.asarray(values, dtype).reshape(2, 3))
    assert out[1, 0] == np.asarray(values, dtype)[3]  # row-major: the 4th element starts row 1


def test_read_idx_plain_and_gzipped(tmp_path):
    raw = _idx(0x08, (3, 2, 2), bytes(range(12)))
    (tmp_path / "a-idx3-ubyte").write_bytes(raw)
    with gzip.open(tmp_path / "a-idx3-ubyte.gz", "wb") as f:
        f.write(raw)
    for name in ("a-idx3-ubyte", "a-idx3-ubyte.gz"):
        out = idx.read_idx(tmp_path / name)
        np.testing.assert_array_equal(out, np.arange(12, dtype=np.uint8).reshape(3, 2, 2))
    with pytest.raises(FileNotFoundError, match="no IDX file"):
        idx.read_idx(tmp_path / "missing")


@pytest.mark.parametrize(
    "raw, match",
    [
        (b"\x00\x00", "shorter than an IDX header"),
        (b"\x00\x01\x08\x01" + struct.pack(">I", 1) + b"\x00", "first two bytes are not zero"),
        (b"\x00\x00\x0a\x01" + struct.pack(">I", 1) + b"\x00", "unknown IDX element type 0x0A"),
        (b"\x00\x00\x08\x00", "0 dimensions"),
        (b"\x00\x00\x08\x02" + struct.pack(">I", 2), "header of 2 dimensions is cut short"),
        (_idx(0x08, (2, 3), bytes(5)), r"6 bytes of data\), the file holds 5"),  # truncated
        (_idx(0x0C, (2,), bytes(9)), r"8 bytes of data\), the file holds 9"),  # trailing bytes
    ],
)
def test_malformed_idx_is_an_idx_format_error(raw, match):
    with pytest.raises(idx.IdxFormatError, match=match):
        idx.parse_idx(raw)


def test_a_truncated_gzip_file_is_an_idx_format_error(tmp_path):
    path = tmp_path / "b.gz"
    with gzip.open(path, "wb") as f:
        f.write(_idx(0x08, (100,), bytes(100)))
    path.write_bytes(path.read_bytes()[:-12])
    with pytest.raises(idx.IdxFormatError):
        idx.read_idx(path)
    path.write_bytes(b"not gzip at all")
    with pytest.raises(idx.IdxFormatError, match="not a readable gzip file"):
        idx.read_idx(path)


def test_missing_fashion_mnist_names_the_debian_package(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        idx.fashion_mnist(tmp_path)


def test_the_installed_fashion_mnist_loads():
    # no skip: `make` installs the data, and its absence must fail loudly
    data = idx.fashion_mnist()
    assert data["x_train"].shape == (60000, 28, 28) and data["x_train"].dtype == np.uint8
    assert data["x_test"].shape == (10000, 28, 28) and data["x_test"].dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(data["y_train"], minlength=10), np.full(10, 6000))
    np.testing.assert_array_equal(np.bincount(data["y_test"], minlength=10), np.full(10, 1000))
    assert data["y_train"].max() == 9 and data["x_train"].max() == 255
