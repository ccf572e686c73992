"""The on-disk array cache: reuse, rebuilds of damaged or stale entries, unusable directories."""

import hashlib
import json
import zipfile

import numpy as np
import pytest
from os_limits import read_only, run_python

from hubopt.tasks.data import cache

RECIPE = {"format": 1, "seed": 3, "size": [4, 5], "name": "toy", "scale": 0.1}


def sample_arrays():
    return {
        "frames": np.arange(2 * 4 * 5 * 3, dtype=np.uint8).reshape(2, 4, 5, 3),
        "steering": np.array([-1.0, 0.25, np.nan, np.inf, -0.0], dtype=np.float32),
        "episode": np.array([0, 0, 1, 2**31 - 1], dtype=np.int32),
        "split": np.array([0, 1, 2], dtype=np.int8),
        "wide": np.array([2**62, -(2**62)], dtype=np.int64),
        "flags": np.array([[True, False]]),
        "names": np.array(["ab", "cde"]),
        "empty": np.zeros((0, 3), dtype=np.float64),
    }


class CountingBuild:
    """A build function that counts its calls."""

    def __init__(self, arrays=None):
        self.calls = 0
        self.arrays = arrays if arrays is not None else sample_arrays()

    def __call__(self):
        self.calls += 1
        return self.arrays


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv(cache.CACHE_ENV_VAR, str(root))
    return root


def assert_same_arrays(got, want):
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name].dtype == want[name].dtype, name
        assert got[name].shape == want[name].shape, name
        assert got[name].tobytes() == want[name].tobytes(), name


def test_build_runs_once_then_the_entry_is_reused(cache_dir):
    build = CountingBuild()
    first = cache.cached_arrays("toy", RECIPE, build)
    second = cache.cached_arrays("toy", dict(reversed(list(RECIPE.items()))), build)
    assert build.calls == 1
    assert_same_arrays(first, sample_arrays())
    assert_same_arrays(second, sample_arrays())  # exact round trip, NaN and -0.0 included


def test_entry_files_describe_the_arrays(cache_dir):
    cache.cached_arrays("toy", RECIPE, CountingBuild())
    npz_path, json_path = cache.entry_paths("toy", RECIPE)
    assert npz_path.parent == cache_dir / "toy" and npz_path.stem == cache.recipe_hash(RECIPE)
    description = json.loads(json_path.read_text())
    assert description["recipe"] == RECIPE
    assert description["npz_sha256"] == hashlib.sha256(npz_path.read_bytes()).hexdigest()
    assert description["arrays"]["frames"] == {"shape": [2, 4, 5, 3], "dtype": "|u1"}
    assert set(description["arrays"]) == set(sample_arrays())
    assert sorted(p.name for p in npz_path.parent.iterdir()) == sorted(
        [npz_path.name, json_path.name]
    )  # no temporary or probe files left


def test_a_changed_recipe_is_a_new_entry(cache_dir):
    build = CountingBuild()
    cache.cached_arrays("toy", RECIPE, build)
    cache.cached_arrays("toy", {**RECIPE, "seed": 4}, build)
    cache.cached_arrays("other_kind", RECIPE, build)
    assert build.calls == 3
    cache.cached_arrays("toy", RECIPE, build)
    cache.cached_arrays("toy", {**RECIPE, "seed": 4}, build)
    assert build.calls == 3


@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "empty"])
def test_a_damaged_npz_is_rebuilt_with_a_warning(cache_dir, damage):
    build = CountingBuild()
    cache.cached_arrays("toy", RECIPE, build)
    npz_path, _ = cache.entry_paths("toy", RECIPE)
    payload = bytearray(npz_path.read_bytes())
    if damage == "truncate":
        payload = payload[: len(payload) // 2]
    elif damage == "flip_byte":
        payload[len(payload) // 2] ^= 0xFF
    else:
        payload = b""
    npz_path.write_bytes(bytes(payload))
    with pytest.warns(cache.CacheRebuildWarning, match="SHA-256"):
        arrays = cache.cached_arrays("toy", RECIPE, build)
    assert build.calls == 2
    assert_same_arrays(arrays, sample_arrays())
    cache.cached_arrays("toy", RECIPE, build)  # repaired: reused, no warning
    assert build.calls == 2


def test_an_npz_that_does_not_load_is_rebuilt_even_with_a_matching_hash(cache_dir):
    build = CountingBuild()
    cache.cached_arrays("toy", RECIPE, build)
    npz_path, json_path = cache.entry_paths("toy", RECIPE)
    garbage = b"PK\x03\x04 not really a zip"
    npz_path.write_bytes(garbage)
    description = json.loads(json_path.read_text())
    description["npz_sha256"] = hashlib.sha256(garbage).hexdigest()
    json_path.write_text(json.dumps(description))
    with pytest.warns(cache.CacheRebuildWarning, match="does not load"):
        arrays = cache.cached_arrays("toy", RECIPE, build)
    assert build.calls == 2
    assert_same_arrays(arrays, sample_arrays())


def test_a_json_with_another_recipe_is_rebuilt(cache_dir):
    build = CountingBuild()
    cache.cached_arrays("toy", RECIPE, build)
    _, json_path = cache.entry_paths("toy", RECIPE)
    description = json.loads(json_path.read_text())
    description["recipe"]["seed"] = 99
    json_path.write_text(json.dumps(description))
    with pytest.warns(cache.CacheRebuildWarning, match="different recipe"):
        cache.cached_arrays("toy", RECIPE, build)
    assert build.calls == 2
    assert json.loads(json_path.read_text())["recipe"] == RECIPE


@pytest.mark.parametrize(
    ("damage", "reason"),
    [("delete", "missing"), ("garbage", "JSON"), ("old_format", "format")],
)
def test_a_missing_or_bad_json_is_rebuilt(cache_dir, damage, reason):
    build = CountingBuild()
    cache.cached_arrays("toy", RECIPE, build)
    _, json_path = cache.entry_paths("toy", RECIPE)
    if damage == "delete":
        json_path.unlink()
    elif damage == "garbage":
        json_path.write_bytes(b"{\xff not json")
    else:
        description = json.loads(json_path.read_text())
        json_path.write_text(json.dumps({**description, "format": 0}))
    with pytest.warns(cache.CacheRebuildWarning, match=reason):
        arrays = cache.cached_arrays("toy", RECIPE, build)
    assert build.calls == 2
    assert_same_arrays(arrays, sample_arrays())


def test_an_entry_whose_arrays_differ_from_its_json_is_rebuilt(cache_dir):
    build = CountingBuild()
    cache.cached_arrays("toy", RECIPE, build)
    _, json_path = cache.entry_paths("toy", RECIPE)
    description = json.loads(json_path.read_text())
    description["arrays"]["frames"]["shape"] = [9]
    json_path.write_text(json.dumps(description))
    with pytest.warns(cache.CacheRebuildWarning, match="does not hold the arrays"):
        cache.cached_arrays("toy", RECIPE, build)
    assert build.calls == 2


def test_an_unusable_cache_dir_names_the_directory_and_the_variable(tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    monkeypatch.setenv(cache.CACHE_ENV_VAR, str(blocker / "cache"))
    build = CountingBuild()
    with pytest.raises(cache.CacheDirError, match="HUBOPT_CACHE") as raised:
        cache.cached_arrays("toy", RECIPE, build)
    assert str(blocker / "cache" / "toy") in str(raised.value)
    assert isinstance(raised.value, OSError)
    assert build.calls == 0  # fails before the (slow) build


def test_the_npz_holds_no_pickles_and_object_arrays_are_refused(cache_dir):
    cache.cached_arrays("toy", RECIPE, CountingBuild())
    npz_path, _ = cache.entry_paths("toy", RECIPE)
    with np.load(npz_path, allow_pickle=False) as npz:  # would raise on a pickled member
        assert_same_arrays({name: npz[name] for name in npz.files}, sample_arrays())
    with pytest.raises(TypeError, match="object"):
        cache.cached_arrays(
            "toy", {**RECIPE, "seed": 5}, lambda: {"bad": np.array([{}, None], dtype=object)}
        )
    assert not cache.entry_paths("toy", {**RECIPE, "seed": 5})[0].exists()


def test_equal_arrays_give_equal_npz_bytes(tmp_path, monkeypatch):
    payloads = []
    for name in ("one", "two"):
        monkeypatch.setenv(cache.CACHE_ENV_VAR, str(tmp_path / name))
        cache.cached_arrays("toy", RECIPE, CountingBuild())
        payloads.append(cache.entry_paths("toy", RECIPE)[0].read_bytes())
    assert payloads[0] == payloads[1]
    with zipfile.ZipFile(tmp_path / "one" / "toy" / f"{cache.recipe_hash(RECIPE)}.npz") as zf:
        assert all(info.filename.endswith(".npy") for info in zf.infolist())


def test_cache_root_defaults_to_the_home_cache(tmp_path, monkeypatch):
    monkeypatch.delenv(cache.CACHE_ENV_VAR, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache.cache_root() == tmp_path / ".cache" / "hubopt"
    monkeypatch.setenv(cache.CACHE_ENV_VAR, "")
    assert cache.cache_root() == tmp_path / ".cache" / "hubopt"
    monkeypatch.setenv(cache.CACHE_ENV_VAR, str(tmp_path / "elsewhere"))
    assert cache.cache_root() == tmp_path / "elsewhere"


def test_recipes_and_kinds_are_checked(cache_dir):
    with pytest.raises(ValueError, match="kind"):
        cache.cached_arrays("../escape", RECIPE, CountingBuild())
    with pytest.raises(TypeError, match="JSON"):
        cache.recipe_hash({"when": object()})
    assert cache.recipe_hash({"seed": np.int64(3)}) == cache.recipe_hash({"seed": 3})
    assert cache.recipe_hash({"a": 1, "b": [1, 2]}) == cache.recipe_hash({"b": (1, 2), "a": 1})
    with pytest.raises(TypeError, match="dict of arrays"):
        cache.cached_arrays("toy", RECIPE, lambda: [np.zeros(2)])


# ------------------------------------------------ a cache that cannot take a new file


def test_a_read_only_cache_serves_its_entries_and_refuses_new_ones(cache_dir):
    build = CountingBuild()
    cache.cached_arrays("toy", RECIPE, build)
    other = {**RECIPE, "seed": 4}
    with read_only(cache_dir):
        assert_same_arrays(cache.cached_arrays("toy", RECIPE, build), sample_arrays())
        with pytest.raises(cache.CacheDirError, match="HUBOPT_CACHE") as raised:
            cache.cached_arrays("toy", other, build)
        with pytest.raises(cache.CacheDirError):  # a new kind: its folder cannot be made
            cache.cached_arrays("toy2", RECIPE, build)
    assert str(cache_dir / "toy") in str(raised.value)
    assert build.calls == 1  # refused before the (slow) build
    assert sorted(p.name for p in (cache_dir / "toy").iterdir()) == sorted(
        p.name for p in cache.entry_paths("toy", RECIPE)
    )


def test_a_full_disk_while_writing_keeps_the_old_entries_and_leaves_no_partial_one(cache_dir):
    cache.cached_arrays("toy", RECIPE, CountingBuild())
    before = {p.name: p.read_bytes() for p in (cache_dir / "toy").iterdir()}
    code = f"""
import json
import numpy as np
from hubopt.tasks.data import cache
try:  # 4 MB of arrays, files limited to 64 kB: the write fails part way
    cache.cached_arrays("toy", {{**{RECIPE!r}, "seed": 5}},
                        lambda: {{"big": np.arange(1 << 20, dtype=np.float32)}})
    print(json.dumps({{"error": None}}))
except cache.CacheDirError as e:
    print(json.dumps({{"error": str(e)}}))
"""
    out = run_python(code, max_file_bytes=1 << 16, env={cache.CACHE_ENV_VAR: str(cache_dir)})
    assert out["error"] is not None and "HUBOPT_CACHE" in out["error"]
    assert str(cache_dir / "toy") in out["error"]
    after = {p.name: p.read_bytes() for p in (cache_dir / "toy").iterdir()}
    assert after == before  # no partial .npz, no temporary file, the old entry intact
    build = CountingBuild()
    cache.cached_arrays("toy", RECIPE, build)
    assert build.calls == 0
