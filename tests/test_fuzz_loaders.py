"""Fuzzing the loaders of files from outside: random bytes, and valid files cut, flipped
or spliced, for a bounded number of examples each. Only each loader's documented
errors may come out (never an IndexError, a struct.error or a MemoryError from deep
inside), and nothing is written beside the file."""

import io
import pickle
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_torch_checkpoint import example_state, legacy_bytes, zip_bytes

from hubopt.learned.checkpoint import CheckpointError, encode_checkpoint, read_checkpoint
from hubopt.tasks.data import cifar
from hubopt.tasks.data.idx import IdxFormatError, parse_idx
from hubopt.tasks.data.torch_checkpoint import CheckpointFormatError, load_state_dict
from hubopt.tasks.data.volumes import load_volume


def _idx_bytes() -> bytes:
    data = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    return struct.pack(">HBB3I", 0, 0x08, 3, 2, 3, 4) + data.tobytes()


def _cifar_bytes() -> bytes:
    batch = {"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1], "batch_label": "x"}
    return pickle.dumps(batch)


def _npy_bytes() -> bytes:
    out = io.BytesIO()
    np.save(out, np.ones((3, 4, 5), np.float32))
    return out.getvalue()


# name: (a valid file's bytes, its file name, the loader, the errors it documents)
LOADERS = {
    "checkpoint": (
        lambda: encode_checkpoint({"w": np.ones((2, 3), np.float32), "b": np.zeros(3)}),
        "params",
        read_checkpoint,
        (CheckpointError,),
    ),
    "torch_legacy": (
        lambda: legacy_bytes(example_state()[0]),
        "weights.pth",
        load_state_dict,
        (CheckpointFormatError, pickle.UnpicklingError),
    ),
    "torch_zip": (
        lambda: zip_bytes(example_state()[0]),
        "weights.pth",
        load_state_dict,
        (CheckpointFormatError, pickle.UnpicklingError),
    ),
    "idx": (
        _idx_bytes,
        "images-idx3-ubyte",
        lambda p: parse_idx(p.read_bytes()),
        (IdxFormatError,),
    ),
    "cifar": (
        _cifar_bytes,
        "data_batch_1",
        cifar.load_pickle,
        (ValueError, pickle.UnpicklingError),
    ),
    "npy_volume": (_npy_bytes, "volume.npy", load_volume, (ValueError,)),
}


def _mutations(valid: bytes):
    """Valid bytes cut at a point, with a byte flipped, or with random bytes spliced in."""
    n = len(valid)
    cut = st.integers(0, n - 1).map(lambda i: valid[:i])
    flip = st.tuples(st.integers(0, n - 1), st.integers(1, 255)).map(
        lambda t: valid[: t[0]] + bytes([valid[t[0]] ^ t[1]]) + valid[t[0] + 1 :]
    )
    splice = st.tuples(st.integers(0, n), st.binary(min_size=1, max_size=64)).map(
        lambda t: valid[: t[0]] + t[1] + valid[t[0] :]
    )
    return st.one_of(cut, flip, splice)


@pytest.mark.parametrize("name", list(LOADERS))
def test_only_documented_errors_come_out(name, tmp_path):
    make, filename, load, errors = LOADERS[name]
    valid = make()
    path = tmp_path / filename
    path.write_bytes(valid)
    load(path)  # the valid file loads

    @settings(
        max_examples=400,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(raw=st.one_of(st.binary(max_size=512), _mutations(valid)))
    def fuzz(raw):
        path.write_bytes(raw)
        try:
            load(path)
        except errors:
            pass

    fuzz()
    assert sorted(p.name for p in tmp_path.iterdir()) == [filename]  # nothing written beside it
