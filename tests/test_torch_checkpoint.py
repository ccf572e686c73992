"""Reading PyTorch state dicts without torch (`hubopt.tasks.data.torch_checkpoint`) and the
restricted unpickler under it (`hubopt.tasks.data.safe_pickle`).

torch is not installed: the tests write checkpoints themselves, in both formats, with a
pickler that names torch's globals without importing them."""

import io
import os
import pickle
import struct
import zipfile
from collections import OrderedDict

import ml_dtypes
import numpy as np
import pytest

from hubopt.tasks.data import safe_pickle
from hubopt.tasks.data.torch_checkpoint import (
    LEGACY_MAGIC,
    LEGACY_PROTOCOL,
    CheckpointFormatError,
    RefusedGlobalError,
    TruncatedPickleError,
    load_state_dict,
)
from hubopt.tasks.models.mobilenet import pretrained_weights_path

# ---------------------------------------------------------------- writing checkpoints


class Global:
    """Pickled as `GLOBAL module name` (torch's globals, without torch)."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def __call__(self, *args):  # pickle wants a callable in a reduce; never called here
        raise AssertionError("a stand-in global is never called")


REBUILD = Global("torch._utils", "_rebuild_tensor_v2")
REBUILD_PARAMETER = Global("torch._utils", "_rebuild_parameter")
STORAGE_KINDS = {
    np.dtype(np.float32): "FloatStorage",
    np.dtype(np.float64): "DoubleStorage",
    np.dtype(np.float16): "HalfStorage",
    np.dtype(np.int64): "LongStorage",
    np.dtype(np.uint8): "ByteStorage",
    np.dtype(ml_dtypes.bfloat16): "BFloat16Storage",
}


class Storage:
    def __init__(self, key: str, data: np.ndarray):
        self.key, self.data = key, np.ascontiguousarray(data).reshape(-1)


class Tensor:
    """`_rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)`."""

    def __init__(self, storage, offset, size, stride, view=None):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride
        self.view = view  # legacy view: (view key, view offset, view numel)

    def __reduce__(self):
        ref = self.storage if self.view is None else ("view", self.storage, self.view)
        return (REBUILD, (ref, self.offset, self.size, self.stride, False, OrderedDict()))


class Parameter:
    def __init__(self, tensor):
        self.tensor = tensor

    def __reduce__(self):
        return (REBUILD_PARAMETER, (self.tensor, True, OrderedDict()))


class Writer(pickle._Pickler):
    """Protocol 2, as torch.save; storages become persistent ids."""

    def __init__(self, file, legacy: bool):
        super().__init__(file, protocol=2)
        self.legacy = legacy
        self.storages: dict[str, Storage] = {}

    def save(self, obj, save_persistent_id=True):
        if isinstance(obj, Global):
            self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
            return
        super().save(obj, save_persistent_id)

    def persistent_id(self, obj):
        view = None
        if isinstance(obj, tuple) and len(obj) == 3 and obj[0] == "view":
            _, obj, view = obj
        if not isinstance(obj, Storage):
            return None
        self.storages[obj.key] = obj
        kind = Global("torch", STORAGE_KINDS[obj.data.dtype])
        pid = ("storage", kind, obj.key, "cpu", obj.data.size)
        return (*pid, view) if self.legacy else pid


def legacy_parts(state) -> list[bytes]:
    """The legacy format's parts: three header pickles, the state dict's pickle, the
    storage keys' pickle, then each storage's int64 count and bytes."""
    parts = [
        pickle.dumps(header, protocol=2)
        for header in (
            LEGACY_MAGIC,
            LEGACY_PROTOCOL,
            {"protocol_version": 1001, "little_endian": True, "type_sizes": {"int": 4}},
        )
    ]
    out = io.BytesIO()
    writer = Writer(out, legacy=True)
    writer.dump(state)
    parts.append(out.getvalue())
    keys = list(writer.storages)
    parts.append(pickle.dumps(keys, protocol=2))
    for key in keys:
        data = writer.storages[key].data
        parts.append(struct.pack("<q", data.size) + data.tobytes())
    return parts


def legacy_bytes(state) -> bytes:
    return b"".join(legacy_parts(state))


def zip_bytes(state, prefix="archive") -> bytes:
    pkl = io.BytesIO()
    writer = Writer(pkl, legacy=False)
    writer.dump(state)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(f"{prefix}/data.pkl", pkl.getvalue())
        archive.writestr(f"{prefix}/byteorder", "little")
        for key, storage in writer.storages.items():
            archive.writestr(f"{prefix}/data/{key}", storage.data.tobytes())
        archive.writestr(f"{prefix}/version", "3\n")
    return out.getvalue()


def example_state():
    """A state dict with the cases a reader must get right, and the arrays it holds."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
    shared = rng.normal(size=12).astype(np.float64)
    big = Storage("1", w)
    both = Storage("2", shared)
    state = OrderedDict(
        [
            ("conv.weight", Tensor(big, 0, (4, 3, 3, 3), (27, 9, 3, 1))),
            ("conv.weight_t", Tensor(big, 0, (27, 4), (1, 27))),  # transposed: not contiguous
            ("a", Tensor(both, 2, (2, 3), (3, 1))),  # two tensors on one storage, offsets
            ("b", Tensor(both, 8, (4,), (1,))),
            (
                "param",
                Parameter(Tensor(Storage("3", np.arange(5, dtype=np.float16)), 0, (5,), (1,))),
            ),
            ("steps", Tensor(Storage("4", np.array([7], np.int64)), 0, (), ())),
            ("mask", Tensor(Storage("5", np.array([1, 0, 1], np.uint8)), 0, (3,), (1,))),
            ("half", Tensor(Storage("6", np.ones(2, ml_dtypes.bfloat16)), 0, (2,), (1,))),
            ("empty", Tensor(Storage("7", np.zeros(0, np.float32)), 0, (0, 3), (3, 1))),
            ("version", 2),
        ]
    )
    expected = {
        "conv.weight": w,
        "conv.weight_t": w.reshape(4, 27).T,
        "a": shared[2:8].reshape(2, 3),
        "b": shared[8:12],
        "param": np.arange(5, dtype=np.float16),
        "steps": np.array(7, np.int64),
        "mask": np.array([1, 0, 1], np.uint8),
        "half": np.ones(2, ml_dtypes.bfloat16),
        "empty": np.zeros((0, 3), np.float32),
        "version": 2,
    }
    return state, expected


def check_equal(got, expected):
    assert list(got) == list(expected)
    for key, want in expected.items():
        if isinstance(want, np.ndarray):
            assert got[key].dtype == want.dtype and got[key].shape == want.shape, key
            np.testing.assert_array_equal(got[key], want)
            assert got[key].flags.c_contiguous and got[key].flags.writeable
        else:
            assert got[key] == want


@pytest.fixture
def write(tmp_path):
    def write(raw: bytes, name="model.pth"):
        path = tmp_path / name
        path.write_bytes(raw)
        return path

    return write


# ---------------------------------------------------------------- the real file


def test_the_real_mobilenet_weights_load_with_their_shapes():
    state = load_state_dict(pretrained_weights_path())
    assert isinstance(state, OrderedDict) and len(state) == 314
    assert state["features.0.0.weight"].shape == (32, 3, 3, 3)
    assert state["features.1.conv.0.0.weight"].shape == (32, 1, 3, 3)  # depthwise
    assert state["features.18.0.weight"].shape == (1280, 320, 1, 1)
    assert state["classifier.1.weight"].shape == (1000, 1280)
    assert state["classifier.1.bias"].shape == (1000,)
    assert state["features.0.1.running_var"].dtype == np.float32
    assert state["features.0.1.num_batches_tracked"].shape == ()
    assert state["features.0.1.num_batches_tracked"].dtype == np.int64
    assert np.all(state["features.0.1.running_var"] > 0)
    assert np.all(np.isfinite(state["classifier.1.weight"]))


def test_the_real_file_cut_inside_its_storage_bytes_is_truncated(write):
    raw = pretrained_weights_path().read_bytes()
    for cut in (len(raw) - 1, len(raw) - 100_000, len(raw) // 2):
        with pytest.raises(TruncatedPickleError, match="truncated"):
            load_state_dict(write(raw[:cut]))


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("fmt", ["legacy", "zip"])
def test_a_written_checkpoint_round_trips(write, fmt):
    state, expected = example_state()
    raw = legacy_bytes(state) if fmt == "legacy" else zip_bytes(state)
    check_equal(load_state_dict(write(raw)), expected)


def test_a_legacy_storage_view_is_offset_into_its_root_storage(write):
    data = np.arange(10, dtype=np.float32)
    root = Storage("9", data)
    state = OrderedDict(v=Tensor(root, 1, (3,), (1,), view=("9v", 4, 6)))
    got = load_state_dict(write(legacy_bytes(state)))
    np.testing.assert_array_equal(got["v"], data[5:8])


# ---------------------------------------------------------------- refusing code


class RunsACommand:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.mark.parametrize("fmt", ["legacy", "zip"])
def test_a_pickle_that_would_run_a_command_is_refused_naming_the_global(write, tmp_path, fmt):
    marker = tmp_path / "pwned"
    state, _ = example_state()
    state["evil"] = RunsACommand(f"touch {marker}")
    raw = legacy_bytes(state) if fmt == "legacy" else zip_bytes(state)
    assert b"system" in raw  # the payload is really there
    with pytest.raises(RefusedGlobalError, match=rf"{os.system.__module__}\.system"):
        load_state_dict(write(raw))
    assert not marker.exists()


def test_restricted_load_refuses_every_global_off_its_list(tmp_path):
    marker = tmp_path / "pwned"
    raw = pickle.dumps(RunsACommand(f"touch {marker}"), protocol=2)
    with pytest.raises(RefusedGlobalError, match="system.*allowed: collections.OrderedDict"):
        safe_pickle.restricted_load(
            io.BytesIO(raw), {("collections", "OrderedDict"): OrderedDict}, what="x"
        )
    for payload in (pickle.dumps(eval, protocol=2), pickle.dumps(getattr, protocol=4)):
        with pytest.raises(RefusedGlobalError, match=r"(__builtin__|builtins)\.(eval|getattr)"):
            safe_pickle.restricted_load(io.BytesIO(payload), {})
    assert not marker.exists()


def test_restricted_load_maps_allowed_globals_to_stand_ins_and_keeps_plain_data():
    class StandIn(dict):
        pass

    data = {"a": [1, 2.5, "s", b"b", None, True], "t": (1, 2)}
    assert safe_pickle.restricted_load(io.BytesIO(pickle.dumps(data)), {}) == data
    raw = pickle.dumps(OrderedDict(x=1), protocol=2)
    got = safe_pickle.restricted_load(io.BytesIO(raw), {("collections", "OrderedDict"): StandIn})
    assert isinstance(got, StandIn) and got == {"x": 1}


def test_restricted_load_decodes_python2_strings_as_asked():
    py2 = b"\x80\x02}q\x00U\x04dataq\x01U\x02\xff\x00s."  # {'data': '\xff\x00'}, Python 2
    with pytest.raises(UnicodeDecodeError):
        safe_pickle.restricted_load(io.BytesIO(py2), {})
    assert safe_pickle.restricted_load(io.BytesIO(py2), {}, encoding="bytes") == {
        b"data": b"\xff\x00"
    }
    got = safe_pickle.restricted_load(io.BytesIO(py2), {}, encoding="latin1")
    assert got == {"data": "\xff\x00"}


def test_restricted_load_refuses_persistent_ids_unless_asked():
    class WithIds(pickle.Pickler):
        def persistent_id(self, obj):
            return "ref-1" if isinstance(obj, Storage) else None

    out = io.BytesIO()
    WithIds(out, protocol=2).dump([Storage("1", np.zeros(1, np.float32))])
    with pytest.raises(RefusedGlobalError, match="persistent id"):
        safe_pickle.restricted_load(io.BytesIO(out.getvalue()), {})
    got = safe_pickle.restricted_load(io.BytesIO(out.getvalue()), {}, persistent_load=str.upper)
    assert got == ["REF-1"]


def test_a_pickled_module_class_is_refused(write):
    state = OrderedDict(model=Global("torch.nn.modules.linear", "Linear"))
    with pytest.raises(RefusedGlobalError, match="torch.nn.modules.linear.Linear"):
        load_state_dict(write(legacy_bytes(state)))


# ---------------------------------------------------------------- damaged files


def test_an_empty_file_is_truncated(write):
    with pytest.raises(TruncatedPickleError, match="empty"):
        load_state_dict(write(b""))


def test_a_legacy_file_cut_anywhere_raises_only_the_documented_errors(write):
    state, _ = example_state()
    parts = legacy_parts(state)
    raw = b"".join(parts)
    ends = np.cumsum([len(p) for p in parts])  # where each part ends
    cuts = {1, 2, 5, 11, *ends[:-1], *(ends[:-1] + 3), ends[3] - 1, len(raw) - 1}
    cuts |= {ends[4] + 3, ends[4] + 8 + 5, ends[5] + 8 + 1}  # in a storage's count and bytes
    cuts |= set(range(1, len(raw), 97))
    for cut in sorted(cuts):
        with pytest.raises((TruncatedPickleError, CheckpointFormatError)):
            load_state_dict(write(raw[:cut]))
    # a cut inside the raw bytes of a storage says so
    with pytest.raises(TruncatedPickleError, match="inside storage 1"):
        load_state_dict(write(raw[: ends[4] + 8 + 5]))


def test_a_zip_file_cut_or_damaged_is_a_format_error(write):
    state, _ = example_state()
    raw = zip_bytes(state)
    for cut in (3, 100, len(raw) // 2, len(raw) - 10):
        with pytest.raises(CheckpointFormatError):
            load_state_dict(write(raw[:cut]))


def test_garbage_and_a_bad_magic_number_are_format_errors(write):
    with pytest.raises(CheckpointFormatError):
        load_state_dict(write(b"\x00\xffnot a pickle at all"))
    with pytest.raises(CheckpointFormatError, match="magic"):
        load_state_dict(write(pickle.dumps(12345, protocol=2) + b"\x00" * 20))
    with pytest.raises(CheckpointFormatError, match="not a state dict"):
        load_state_dict(write(zip_bytes([1, 2, 3])))


@pytest.mark.parametrize(
    "size, stride, offset",
    [
        ((10,), (1,), 0),  # more elements than the storage
        ((2, 3), (4, 1), 0),  # strides reach past the end
        ((3,), (1,), 4),  # an offset that runs past the end
        ((2,), (-1,), 1),  # negative strides (torch has none)
    ],
)
@pytest.mark.parametrize("fmt", ["legacy", "zip"])
def test_a_tensor_overrunning_its_storage_is_refused(write, fmt, size, stride, offset):
    storage = Storage("1", np.arange(6, dtype=np.float32))
    state = OrderedDict(w=Tensor(storage, offset, size, stride))
    raw = legacy_bytes(state) if fmt == "legacy" else zip_bytes(state)
    with pytest.raises(CheckpointFormatError, match="overruns|negative"):
        load_state_dict(write(raw))


def test_a_storage_of_the_wrong_length_is_refused(write):
    storage = Storage("1", np.arange(6, dtype=np.float32))
    state = OrderedDict(w=Tensor(storage, 0, (6,), (1,)))
    raw = zip_bytes(state)
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        members = {n: archive.read(n) for n in archive.namelist()}
    members["archive/data/1"] = members["archive/data/1"][:-4]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    with pytest.raises(CheckpointFormatError, match="expected 24"):
        load_state_dict(write(out.getvalue()))
    # legacy: the element count before the bytes disagrees with the pickle's
    raw = bytearray(legacy_bytes(state))
    at = len(raw) - 24 - 8
    raw[at : at + 8] = struct.pack("<q", 5)
    with pytest.raises(CheckpointFormatError, match="holds 5 elements"):
        load_state_dict(write(bytes(raw)))
