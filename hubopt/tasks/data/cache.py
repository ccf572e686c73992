"""An on-disk cache of generated arrays, keyed by the recipe that made them.

Data that is slow to make (driving frames rendered by a simulator, say) is
built once and kept under the cache root: `$HUBOPT_CACHE`, by default
`~/.cache/hubopt`. An entry of kind `kind` made from the JSON-able `recipe`
(which should name everything the data depends on, its seed and a format
version included) is two files,

    <root>/<kind>/<hash>.npz    the arrays (a zip of .npy files, no pickles)
    <root>/<kind>/<hash>.json   the recipe, each array's shape and dtype, and
                                the SHA-256 of the .npz bytes

where `<hash>` hashes the canonical JSON of the recipe. Both are written
atomically, the .npz first and the .json last, so a .json marks a complete
entry. An entry is used only if its .json holds the requested recipe, the
.npz bytes have the recorded hash, and they load into the recorded arrays;
anything else (a truncated or edited file, an interrupted write, a stale
format) is rebuilt with a `CacheRebuildWarning` saying why.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import warnings
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from hubopt._src.atomic_write import write_atomic
from hubopt._src.cache_dir import CACHE_ENV_VAR, cache_root, probe_writable

__all__ = [
    "CACHE_ENV_VAR",
    "CacheDirError",
    "CacheRebuildWarning",
    "cache_root",
    "cached_arrays",
    "entry_paths",
    "recipe_hash",
]

ENTRY_FORMAT = 1
"""The layout of the .json/.npz pair; a change makes older entries stale."""

_KIND_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed, so equal arrays give equal .npz bytes


class CacheDirError(OSError):
    """The cache directory cannot be created or written."""


class CacheRebuildWarning(UserWarning):
    """A cache entry was damaged, incomplete or stale, and is being rebuilt."""


class _UnusableEntry(Exception):
    """Why an existing cache entry cannot be used."""


def canonical_json(recipe: Mapping[str, Any]) -> str:
    """The recipe as JSON with sorted keys and no spaces; `TypeError` if it is not JSON-able."""
    if not isinstance(recipe, Mapping):
        raise TypeError(f"a recipe must be a mapping, got {type(recipe).__name__}")

    def numpy_scalar(value: Any) -> Any:
        if isinstance(value, np.generic):
            return value.item()
        raise TypeError(
            f"a recipe must hold only JSON values; got {type(value).__name__}: {value!r}"
        )

    return json.dumps(
        recipe, sort_keys=True, separators=(",", ":"), allow_nan=False, default=numpy_scalar
    )


def recipe_hash(recipe: Mapping[str, Any]) -> str:
    """The entry name of a recipe: SHA-256 of its canonical JSON, 32 hex digits."""
    return hashlib.sha256(canonical_json(recipe).encode("utf-8")).hexdigest()[:32]


def entry_paths(kind: str, recipe: Mapping[str, Any]) -> tuple[Path, Path]:
    """The `(npz, json)` paths of the entry for `recipe` under the current cache root."""
    if not isinstance(kind, str) or not _KIND_PATTERN.match(kind):
        raise ValueError(
            f"cache kind must be a plain name of letters, digits, '_', '-' or '.', got {kind!r}"
        )
    name = recipe_hash(recipe)
    directory = cache_root() / kind
    return directory / f"{name}.npz", directory / f"{name}.json"


def cached_arrays(
    kind: str,
    recipe: Mapping[str, Any],
    build: Callable[[], Mapping[str, np.ndarray]],
) -> dict[str, np.ndarray]:
    """The arrays `build()` makes for `recipe`, from the cache when a sound entry is there.

    `build` is called only when there is no usable entry; its arrays are then
    stored (the .npz first, the .json last) and returned. A damaged, truncated,
    incomplete or stale entry is rebuilt with a `CacheRebuildWarning`. A cache
    directory that cannot be written raises `CacheDirError` before `build` runs.
    """
    npz_path, json_path = entry_paths(kind, recipe)
    wanted_recipe = json.loads(canonical_json(recipe))
    if npz_path.exists() or json_path.exists():
        try:
            return _load_entry(npz_path, json_path, wanted_recipe)
        except _UnusableEntry as why:
            warnings.warn(
                f"rebuilding the {kind!r} cache entry {npz_path}: {why}",
                CacheRebuildWarning,
                stacklevel=2,
            )
    _check_writable(npz_path.parent)
    arrays = _checked_arrays(build())
    payload = _npz_bytes(arrays)
    description = {
        "format": ENTRY_FORMAT,
        "kind": kind,
        "recipe": wanted_recipe,
        "arrays": {
            name: {"shape": list(array.shape), "dtype": array.dtype.str}
            for name, array in sorted(arrays.items())
        },
        "npz_sha256": hashlib.sha256(payload).hexdigest(),
    }
    try:
        json_path.unlink(missing_ok=True)  # without its .json, a half-replaced entry is incomplete
        write_atomic(npz_path, payload)
        write_atomic(json_path, json.dumps(description, indent=1, sort_keys=True) + "\n")
    except OSError as error:
        raise _dir_error(npz_path.parent, error) from error
    return arrays


def _load_entry(npz_path: Path, json_path: Path, wanted_recipe: Any) -> dict[str, np.ndarray]:
    """The arrays of a complete, intact entry for `wanted_recipe`; else `_UnusableEntry`."""
    if not json_path.exists():
        raise _UnusableEntry(f"{json_path.name} is missing (an interrupted write)")
    try:
        description = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise _UnusableEntry(f"{json_path.name} does not read as JSON ({error})") from None
    if not isinstance(description, dict) or description.get("format") != ENTRY_FORMAT:
        raise _UnusableEntry(f"{json_path.name} is not a format-{ENTRY_FORMAT} entry")
    if description.get("recipe") != wanted_recipe:
        raise _UnusableEntry(f"{json_path.name} records a different recipe")
    try:
        payload = npz_path.read_bytes()
    except OSError as error:
        raise _UnusableEntry(f"{npz_path.name} cannot be read ({error})") from None
    if hashlib.sha256(payload).hexdigest() != description.get("npz_sha256"):
        raise _UnusableEntry(
            f"{npz_path.name} does not have the SHA-256 recorded in {json_path.name} "
            "(damaged or truncated)"
        )
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except Exception as error:  # a corrupt zip or .npy can fail in many ways
        raise _UnusableEntry(f"{npz_path.name} does not load ({error})") from None
    found = {
        name: {"shape": list(array.shape), "dtype": array.dtype.str}
        for name, array in arrays.items()
    }
    if found != description.get("arrays"):
        raise _UnusableEntry(f"{npz_path.name} does not hold the arrays {json_path.name} lists")
    return arrays


def _checked_arrays(arrays: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """`build()`'s result as a dict of plain (pickle-free) arrays; `TypeError` otherwise."""
    if not isinstance(arrays, Mapping):
        raise TypeError(f"build() must return a dict of arrays, got {type(arrays).__name__}")
    checked = {}
    for name, value in arrays.items():
        if not isinstance(name, str) or not re.match(r"^[A-Za-z0-9_]+$", name):
            raise TypeError(f"array names must be identifiers, got {name!r}")
        array = np.asarray(value)
        if array.dtype.hasobject:
            raise TypeError(f"array {name!r} has dtype object, which the cache does not store")
        checked[name] = array
    return checked


def _npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """An .npz (deflated zip of .npy files, no pickles) with fixed timestamps."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(arrays):
            member = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
            member.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(member, "w", force_zip64=True) as stream:
                np.lib.format.write_array(stream, arrays[name], allow_pickle=False)
    return buffer.getvalue()


def _check_writable(directory: Path) -> None:
    """Creates `directory` and writes a probe file in it; `CacheDirError` if that fails."""
    try:
        probe_writable(directory)
    except OSError as error:
        raise _dir_error(directory, error) from error


def _dir_error(directory: Path, error: OSError) -> CacheDirError:
    return CacheDirError(
        f"the cache directory {directory} cannot be written ({error}); set the "
        f"{CACHE_ENV_VAR} environment variable to a writable directory"
    )
