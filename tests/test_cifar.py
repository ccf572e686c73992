"""CIFAR python batches: tiny batches written as the real ones are, read by the restricted
unpickler; malicious, truncated and malformed files are refused."""

import os
import pickle
import pickletools
import struct

import numpy as np
import pytest

from hubopt.tasks.data import cifar
from hubopt.tasks.data.safe_pickle import RefusedGlobalError, TruncatedPickleError


def _images(n, seed):
    """n distinct random 32×32 RGB images and their rows in CIFAR's channel-major layout."""
    images = np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    rows = images.transpose(0, 3, 1, 2).reshape(n, 3072)
    return images, rows


def _write(path, batch, protocol=pickle.DEFAULT_PROTOCOL):
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=protocol)


# Python 2's cPickle (which wrote the real batches) at protocol 2: byte strings as
# SHORT_BINSTRING/BINSTRING, numpy arrays through numpy.core.multiarray._reconstruct.
def _py2_str(b: bytes) -> bytes:
    return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<I", len(b)) + b


def _py2_int(n: int) -> bytes:
    return b"K" + bytes([n]) if n < 256 else b"M" + struct.pack("<H", n)


def _py2_array(a: np.ndarray) -> bytes:
    assert a.dtype == np.uint8 and a.ndim == 2
    return (
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
        + b"K\x00\x85"
        + _py2_str(b"b")
        + b"\x87R("  # (ndarray, (0,), 'b') REDUCE, then the state tuple
        + b"K\x01"
        + _py2_int(a.shape[0])
        + _py2_int(a.shape[1])
        + b"\x86cnumpy\ndtype\n"
        + _py2_str(b"u1")
        + b"K\x00K\x01\x87R(K\x03"
        + _py2_str(b"|")
        + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"  # the dtype's state, BUILD
        + b"\x89"  # not Fortran order
        + _py2_str(a.tobytes())
        + b"tb"
    )


def _py2_pickle(batch: dict) -> bytes:
    out = b"\x80\x02}("
    for key, value in batch.items():
        out += _py2_str(key.encode())
        if isinstance(value, np.ndarray):
            out += _py2_array(value)
        elif isinstance(value, list):
            out += b"](" + b"".join(_py2_int(v) for v in value) + b"e"
        else:
            out += _py2_str(value.encode())
    return out + b"u."


def _cifar10_folder(folder, writer=_write, per_batch=4):
    """A CIFAR-10-format folder of 5 training batches and a test batch of `per_batch`
    images; returns the images and labels written, in file order."""
    xs, ys = [], []
    for i, name in enumerate([*cifar.CIFAR10_TRAIN, cifar.CIFAR10_TEST]):
        images, rows = _images(per_batch, seed=i)
        labels = [(3 * i + j) % 10 for j in range(per_batch)]
        writer(
            folder / name,
            {"batch_label": f"batch {i}", "labels": labels, "data": rows, "filenames": ["a"]},
        )
        xs.append(images)
        ys.append(labels)
    return xs, ys


def test_cifar10_batches_written_by_pickle_dump_load_as_images(tmp_path):
    xs, ys = _cifar10_folder(tmp_path)
    data = cifar.load_cifar10(tmp_path)
    assert data["num_classes"] == 10
    assert data["x_train"].shape == (20, 32, 32, 3) and data["x_train"].dtype == np.uint8
    np.testing.assert_array_equal(data["x_train"], np.concatenate(xs[:5]))
    np.testing.assert_array_equal(data["y_train"], np.concatenate(ys[:5]))
    np.testing.assert_array_equal(data["x_test"], xs[5])
    np.testing.assert_array_equal(data["y_test"], ys[5])
    # channel-major rows: byte 0 is pixel (0, 0) red, byte 1024 its green, byte 1 pixel (0, 1)
    _, rows = _images(4, seed=0)
    assert data["x_train"][0, 0, 0, 0] == rows[0, 0]
    assert data["x_train"][0, 0, 0, 1] == rows[0, 1024]
    assert data["x_train"][0, 0, 1, 0] == rows[0, 1]


def test_python2_batches_as_the_real_files_load(tmp_path):
    images, rows = _images(3, seed=7)
    raw = _py2_pickle({"batch_label": "testing batch 1 of 1", "labels": [3, 0, 9], "data": rows})
    pickletools.dis(raw, out=open(os.devnull, "w"))  # a well-formed pickle
    # numpy's own (unrestricted) unpickler reads it as the real files are read
    reference = pickle.loads(raw, encoding="bytes")
    np.testing.assert_array_equal(reference[b"data"], rows)
    path = tmp_path / "test_batch"
    path.write_bytes(raw)
    x, y = cifar.read_batch(path, "labels", 10)
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, [3, 0, 9])


def test_cifar100_fine_and_coarse_labels(tmp_path):
    train_images, train_rows = _images(6, seed=1)
    test_images, test_rows = _images(2, seed=2)
    fine, coarse = [0, 99, 5, 42, 17, 63], [0, 19, 2, 3, 4, 5]
    for name, rows, f, c in [
        ("train", train_rows, fine, coarse),
        ("test", test_rows, [1, 2], [1, 2]),
    ]:
        _write(tmp_path / name, {"data": rows, "fine_labels": f, "coarse_labels": c})
    d = cifar.load_cifar100(tmp_path)
    assert d["num_classes"] == 100
    np.testing.assert_array_equal(d["x_train"], train_images)
    np.testing.assert_array_equal(d["y_train"], fine)
    np.testing.assert_array_equal(d["x_test"], test_images)
    coarse_d = cifar.load_cifar100(tmp_path, labels="coarse")
    assert coarse_d["num_classes"] == 20
    np.testing.assert_array_equal(coarse_d["y_train"], coarse)
    with pytest.raises(ValueError, match="labels must be one of"):
        cifar.load_cifar100(tmp_path, labels="medium")


class _Malicious:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_a_malicious_pickle_is_refused_naming_the_global(tmp_path, capfd):
    path = tmp_path / "data_batch_1"
    _write(path, {"data": _Malicious(), "labels": [0]})
    with pytest.raises(RefusedGlobalError, match=r"(posix|os)\.system"):
        cifar.read_batch(path, "labels", 10)
    assert "pwned" not in capfd.readouterr().out


def test_other_numpy_globals_and_object_arrays_are_refused(tmp_path):
    path = tmp_path / "b"
    _write(path, {"data": np.zeros((1, 3072), np.uint8), "labels": [0]}, protocol=2)
    with pytest.raises(RefusedGlobalError, match="_codecs.encode"):  # py3 protocol 2 bytes
        cifar.read_batch(path, "labels", 10)
    _write(path, {"data": np.array([None, 1], dtype=object), "labels": [0]})
    with pytest.raises(cifar.CifarFormatError, match="not numeric"):
        cifar.read_batch(path, "labels", 10)
    _write(path, {"data": np.float32(1.0), "labels": [0]})  # a numpy scalar: another global
    with pytest.raises(RefusedGlobalError, match="refusing to load global numpy"):
        cifar.read_batch(path, "labels", 10)


def test_a_truncated_batch_is_a_clear_error(tmp_path):
    path = tmp_path / "data_batch_1"
    _write(path, {"data": _images(2, 0)[1], "labels": [1, 2]})
    raw = path.read_bytes()
    for cut in (len(raw) // 2, len(raw) - 1, 10):
        path.write_bytes(raw[:cut])
        with pytest.raises(TruncatedPickleError, match="truncated"):
            cifar.read_batch(path, "labels", 10)


def test_array_data_that_disagrees_with_its_shape_is_refused(tmp_path):
    path = tmp_path / "b"
    _write(path, {"labels": [1], "data": np.zeros((1, 3072), np.uint8)})
    raw = path.read_bytes()
    assert raw.count(b"K\x01M\x00\x0c\x86") == 1  # the shape (1, 3072) in the array's state
    path.write_bytes(raw.replace(b"K\x01M\x00\x0c\x86", b"K\x01M\x01\x0c\x86"))  # 3073
    with pytest.raises(cifar.CifarFormatError, match="needs 3073 bytes, the pickle holds 3072"):
        cifar.read_batch(path, "labels", 10)


@pytest.mark.parametrize(
    "batch, match",
    [
        ({"data": np.zeros((2, 3000), np.uint8), "labels": [0, 1]}, r"\(N, 3072\)"),
        ({"data": np.zeros((2, 3072), np.float32), "labels": [0, 1]}, "uint8"),
        ({"data": np.zeros((2, 3072), np.uint8), "labels": [0]}, "one per image"),
        ({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 10]}, r"lie in \[0, 10\)"),
        ({"data": np.zeros((2, 3072), np.uint8)}, "no 'labels'"),
        ([1, 2], "is a dict"),
    ],
)
def test_malformed_batches_are_named(tmp_path, batch, match):
    path = tmp_path / "data_batch_1"
    _write(path, batch)
    with pytest.raises(cifar.CifarFormatError, match=match):
        cifar.read_batch(path, "labels", 10)


def test_a_missing_batch_names_the_files(tmp_path):
    _cifar10_folder(tmp_path)
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        cifar.load_cifar10(tmp_path)
