"""Flax-msgpack checkpoints (VELO_SPEC §6) and VeLO theta files."""

from pathlib import Path

import msgpack
import numpy as np
import pytest

from hubopt.learned import checkpoint as ck
from hubopt.learned.checkpoint import CheckpointError, read_checkpoint, write_checkpoint
from hubopt.learned.velo_lopt.checkpoint import (
    expected_shapes,
    load_velo_theta,
    read_velo_config,
    save_velo_theta,
    validate_velo_theta,
)
from hubopt.learned.velo_lopt.transform import init_velo_theta

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "velo"
needs_shared = pytest.mark.skipif(
    not SHARED.is_dir(), reason=f"VeLO reference files not found at {SHARED} (../shared/velo)"
)


def _ext(arr, code=1):
    arr = np.asarray(arr)
    payload = msgpack.packb([list(arr.shape), arr.dtype.name, arr.tobytes()], use_bin_type=True)
    return msgpack.ExtType(code, payload)


def _raw(tree) -> bytes:
    return msgpack.packb(tree, use_bin_type=True)


# --------------------------------------------------------------------------- generic format


def test_round_trip_nested_dict_of_arrays(tmp_path):
    params = {
        "b": {"z": np.arange(6, dtype=np.float32).reshape(2, 3), "a": np.float32(3.5)},
        "a": np.array([1, -2], np.int32),
        "empty": np.zeros((0, 3), np.float32),
        "f64": np.linspace(0, 1, 5),
    }
    path = write_checkpoint(tmp_path / "ckpt", params, gen_id="gen-7", step=12)
    out = read_checkpoint(path)
    assert out["gen_id"] == "gen-7" and out["step"] == 12
    assert set(out["params"]) == {"a", "b", "empty", "f64"}
    np.testing.assert_array_equal(out["params"]["b"]["z"], params["b"]["z"])
    assert out["params"]["b"]["z"].dtype == np.float32
    assert out["params"]["b"]["a"].shape == () and out["params"]["b"]["a"] == np.float32(3.5)
    assert out["params"]["a"].dtype == np.int32
    assert out["params"]["empty"].shape == (0, 3)
    np.testing.assert_array_equal(out["params"]["f64"], params["f64"])
    out["params"]["a"][0] = 5  # returned arrays are writable copies


def test_keys_sorted_at_every_level_and_ext1_little_endian(tmp_path):
    params = {"zeta": {"y": np.ones(2, ">f4"), "x": np.ones(1, np.float32)}, "alpha": np.ones(1)}
    raw = (write_checkpoint(tmp_path / "c", params, gen_id="g")).read_bytes()
    order = []
    exts = []

    def hook(pairs):
        order.append([k for k, _ in pairs])
        return dict(pairs)

    msgpack.unpackb(
        raw,
        object_pairs_hook=hook,
        ext_hook=lambda c, d: exts.append((c, msgpack.unpackb(d))) or c,
        raw=False,
    )
    assert ["x", "y"] in order and ["alpha", "zeta"] in order
    assert ["gen_id", "params", "step"] in order
    assert {c for c, _ in exts} == {1}
    big_endian_payload = [d for _, d in exts if d[0] == [2]][0]
    assert big_endian_payload[1] == "float32"
    assert big_endian_payload[2] == np.ones(2, "<f4").tobytes()
    np.testing.assert_array_equal(read_checkpoint(tmp_path / "c")["params"]["zeta"]["y"], [1, 1])


def test_accepts_ext3_int_and_array_steps_and_old_namedtuples(tmp_path):
    tree = {
        "gen_id": "x",
        "params": {
            "s": _ext(np.float32(2.0), code=3),
            "state": {
                "name": "LSTMState",
                "fields": {"0": "hidden", "1": "cell"},
                "values": {
                    "0": _ext(np.ones((1, 2), np.float32)),
                    "1": _ext(np.zeros((1, 2), np.float32)),
                },
            },
        },
        "step": _ext(np.int32(5620)),
    }
    (tmp_path / "f").write_bytes(_raw(tree))
    out = read_checkpoint(tmp_path / "f")
    assert out["step"] == 5620 and isinstance(out["step"], int)
    assert set(out["params"]["state"]) == {"hidden", "cell"}
    np.testing.assert_array_equal(out["params"]["state"]["hidden"], np.ones((1, 2)))
    assert out["params"]["s"].shape == () and float(out["params"]["s"]) == 2.0
    tree["step"] = 7
    (tmp_path / "g").write_bytes(_raw(tree))
    assert read_checkpoint(tmp_path / "g")["step"] == 7


def test_chunked_arrays_round_trip(tmp_path, monkeypatch):
    monkeypatch.setattr(ck, "MAX_CHUNK_BYTES", 16)  # force flax's chunked layout on a small array
    x = np.arange(10, dtype=np.float32)
    write_checkpoint(tmp_path / "c", {"x": x})
    raw = msgpack.unpackb((tmp_path / "c").read_bytes(), raw=False, ext_hook=lambda c, d: c)
    assert raw["params"]["x"]["__msgpack_chunked_array__"] is True
    assert len(raw["params"]["x"]["chunks"]) == 3
    np.testing.assert_array_equal(read_checkpoint(tmp_path / "c")["params"]["x"], x)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty"),
        (b'{"params": {}}', "does not start with a msgpack map"),
        (_raw([1, 2, 3]), "does not start with a msgpack map"),
        (_raw({"weights": 1}), "no 'params' key"),
        (_raw({"0": {}, "1": "", "2": 0}), "tuple checkpoint"),
        (_raw({"params": {}, "extra": 1}), "unexpected top-level keys"),
        (_raw({"params": {"a": msgpack.ExtType(9, b"xx")}}), "unknown msgpack ext type 9"),
        (_raw({"params": {"a": msgpack.ExtType(1, b"\xc1\xc1")}}), "corrupt array payload"),
        (
            _raw({"params": {"a": msgpack.ExtType(1, _raw([[4], "float32", b"abc"]))}}),
            "needs 16 bytes",
        ),
        (_raw({"params": {"a": msgpack.ExtType(1, _raw([[1], "object", b"12345678"]))}}), "object"),
        (_raw({"params": {}, "step": "five"}), "'step'"),
        (_raw({"params": {}}) + b"\x00", "trailing bytes"),
    ],
)
def test_foreign_and_corrupt_files_are_rejected(tmp_path, content, message):
    path = tmp_path / "bad"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message) as e:
        read_checkpoint(path)
    assert str(path) in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        read_checkpoint(tmp_path / "nope")


def test_truncated_file(tmp_path):
    raw = _raw({"gen_id": "", "params": {"w": _ext(np.ones(100, np.float32))}, "step": 0})
    for cut in (5, len(raw) // 2, len(raw) - 1):
        (tmp_path / "t").write_bytes(raw[:cut])
        with pytest.raises(CheckpointError, match="truncated"):
            read_checkpoint(tmp_path / "t")


def test_failed_write_keeps_existing_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "ckpt"
    write_checkpoint(path, {"w": np.ones(3, np.float32)}, step=1)
    good = path.read_bytes()
    with pytest.raises(TypeError, match="leaves must be arrays"):
        write_checkpoint(path, {"w": "not an array"})
    with pytest.raises(TypeError, match="keys must be str"):
        write_checkpoint(path, {1: np.ones(2)})
    assert path.read_bytes() == good
    # A failure at the rename (the target is a directory): the temp file is removed.
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "keep").write_text("x")
    with pytest.raises(OSError):
        write_checkpoint(tmp_path / "dir", {"w": np.ones(3, np.float32)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "dir"]
    assert read_checkpoint(path)["step"] == 1


# --------------------------------------------------------------------------- VeLO theta


@needs_shared
@pytest.mark.parametrize("name, H, K", [("small", 32, 8), ("full", 512, 256)])
def test_load_reference_params_and_rewrite_byte_identical(tmp_path, name, H, K):
    src = SHARED / name / "params"
    theta = load_velo_theta(src)
    assert theta["lstm_init_state"]["hidden"].shape == (1, H)
    assert theta["rnn_params"]["rnn/linear"]["w"].shape == (2 * H, 4 * H)
    assert theta["ff_mod_stack"]["~"]["w0__13"].shape == (K, 3, 4)
    assert all(v.dtype == np.float32 for v in _leaves(theta))
    ckpt = read_checkpoint(src)
    # The official writer's bytes: sorted keys, ext-1 arrays, a 0-d int32 step.
    out = save_velo_theta(
        tmp_path / "params", theta, gen_id=ckpt["gen_id"], step=np.int32(ckpt["step"])
    )
    assert out.read_bytes() == src.read_bytes()
    assert len(src.read_bytes()) == {"small": 52_636, "full": 9_282_566}[name]


def _leaves(tree):
    for v in tree.values():
        yield from (_leaves(v) if isinstance(v, dict) else [v])


def test_velo_theta_round_trip_and_shape_inference(tmp_path):
    import jax

    theta = init_velo_theta(jax.random.PRNGKey(0), lstm_hidden_size=16, param_inits=4)
    save_velo_theta(tmp_path / "p", theta, gen_id="mine", step=3)
    back = load_velo_theta(tmp_path / "p")
    assert read_checkpoint(tmp_path / "p")["gen_id"] == "mine"
    for a, b in zip(jax.tree_util.tree_leaves(theta), jax.tree_util.tree_leaves(back), strict=True):
        np.testing.assert_array_equal(a, b)
    assert validate_velo_theta(back)[1:] == (16, 4)
    assert len(expected_shapes(512, 256)) == 33
    n_values = sum(int(np.prod(s)) for s in expected_shapes(512, 256).values())
    assert n_values == 2_320_385  # VELO_SPEC §5
    assert sum(int(np.prod(s)) for s in expected_shapes(32, 8).values()) == 12_929


def _small_theta():
    import jax

    return init_velo_theta(jax.random.PRNGKey(0), lstm_hidden_size=8, param_inits=2)


def test_velo_theta_validation_errors(tmp_path):
    theta = _small_theta()
    bad = _small_theta()
    del bad["ff_mod_stack"]["~"]["w0__7"]
    with pytest.raises(ValueError, match=r"missing keys \['ff_mod_stack/~/w0__7'\]"):
        validate_velo_theta(bad)
    bad = _small_theta()
    bad["ff_mod_stack"]["~"]["w0__3"] = np.zeros((2, 1, 4), np.float32)
    with pytest.raises(ValueError, match=r"w0__3 has shape \(2, 1, 4\), expected \(2, 3, 4\)"):
        validate_velo_theta(bad)
    bad = _small_theta()
    bad["rnn_params"]["extra"] = {"w": np.zeros(1)}
    with pytest.raises(ValueError, match="unexpected keys"):
        validate_velo_theta(bad)
    bad = _small_theta()
    bad["rnn_params"]["rnn"] = {"linear": bad["rnn_params"].pop("rnn/linear")}
    with pytest.raises(ValueError, match="'rnn/linear'"):
        validate_velo_theta(bad)
    with pytest.raises(ValueError, match="top-level keys"):
        validate_velo_theta({"params": theta})
    # A generic checkpoint that is not VeLO: clear error naming the file.
    write_checkpoint(tmp_path / "other", {"w": np.ones(3)})
    with pytest.raises(CheckpointError, match=str(tmp_path / "other")):
        load_velo_theta(tmp_path / "other")


def test_config_gin(tmp_path):
    theta = _small_theta()
    folder = tmp_path / "ckpt"
    save_velo_theta(folder / "params", theta)
    gin = folder / "config.gin"
    gin.write_text(
        "# c\nHyperV2.lstm_hidden_size = 8\nHyperV2.param_inits = \\\n  2\n"
        "HyperV2.use_bugged_loss_features = False\nrun_train.lopt = @HyperV2()\n"
    )
    assert read_velo_config(gin) == {"lstm_hidden_size": 8, "param_inits": 2}
    load_velo_theta(folder / "params")
    gin.write_text("HyperV2.lstm_hidden_size = 16\nHyperV2.param_inits = 2\n")
    with pytest.raises(CheckpointError, match="lstm_hidden_size=16"):
        load_velo_theta(folder / "params")
    gin.write_text(
        "HyperV2.lstm_hidden_size = 8\nHyperV2.param_inits = 2\nHyperV2.exp_mult = 0.01\n"
    )
    with pytest.raises(ValueError, match="unsupported binding HyperV2.exp_mult"):
        read_velo_config(gin)
    gin.write_text(
        "HyperV2.lstm_hidden_size = 8\nHyperV2.param_inits = 2\n"
        "HyperV2.use_bugged_loss_features = True\n"
    )
    with pytest.raises(ValueError, match="use_bugged_loss_features must be False"):
        read_velo_config(gin)


@needs_shared
def test_reference_config_gin():
    assert read_velo_config(SHARED / "full" / "config.gin") == {
        "lstm_hidden_size": 512,
        "param_inits": 256,
    }
