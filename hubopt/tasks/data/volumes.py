r"""3-D volumes for the SIREN compression task: a real MRI scan, and the user's own volumes.

The built-in scan is the Colin27 ("ch2") T1-weighted MRI template as the
Debian package `mricron-data` ships it, `/usr/share/mricron/templates/ch2better.nii.gz`:
a skull-stripped head, 301×370×316 voxels of 0.5 mm, uint8 intensities (0
outside the brain, 51–130 inside). A user's volume is read by `load_volume`
from a `.npy` array, a NIfTI file (`.nii`, `.nii.gz`), or a folder of TIFF
slices (or one multi-page TIFF), e.g. a HiP-CT organ scan.

`prepare_volume` turns a raw volume into the task's target, deterministically:

  1. crop (optional) to the bounding box of the foreground, the voxels with
     v > min + t·(max − min) (t = `crop_threshold`; t = 0 for the Colin27
     scan, whose background is exactly 0);
  2. resample every axis to the target shape, separably: a linear map per axis,
     area averaging when an axis shrinks (output voxel i is the mean of the
     input over its footprint [i·s, (i+1)·s), s = n_in/n_out, partial voxels
     weighted by their overlap; anti-aliased, unlike point sampling) and
     linear interpolation between voxel centres when it grows. Voxels are
     treated as cubes of equal size, whatever the scan's spacing, so a crop
     that is not a cube is stretched to one (the Colin27 brain box,
     289×361×309, by at most 1.25×);
  3. normalise to [0, 1]: v ↦ (v − min)/(max − min) over the resampled
     volume, so its data range is exactly 1 (the PSNR's MAX).

Prepared volumes are cached by `hubopt.tasks.data.cache.cached_arrays`, keyed by a
recipe that names the source (the scan's SHA-256; for a user's volume its
resolved path and each file's size and modification time), the shape and the
method.
"""

from __future__ import annotations

import re
import tokenize
from pathlib import Path

import numpy as np

from hubopt._src.file_hash import file_sha256
from hubopt.tasks.data.cache import cached_arrays

__all__ = [
    "COLIN27_PACKAGE",
    "COLIN27_PATH",
    "colin27_volume",
    "foreground_box",
    "load_volume",
    "normalise",
    "prepare_volume",
    "resample",
    "resample_matrix",
    "user_volume",
]

COLIN27_PATH = Path("/usr/share/mricron/templates/ch2better.nii.gz")
COLIN27_PACKAGE = "mricron-data"
VOLUME_FORMAT = 1  # the preparation method; a change makes cached volumes stale
METHOD = "crop-box, area-average down / linear up, min-max to [0, 1]"
TIFF_SUFFIXES = (".tif", ".tiff")
NIFTI_SUFFIXES = (".nii", ".nii.gz")


# ---------------------------------------------------------------- reading


def load_volume(path: str | Path) -> np.ndarray:
    """The volume at `path` as float32 `(D, H, W)`, intensities as stored (not normalised).

    `.npy`: the array. `.nii`/`.nii.gz`: the NIfTI data array (voxel order as
    stored, scaling slope and intercept applied; a trailing axis of size 1 is
    dropped). A folder: its `.tif`/`.tiff` slices, sorted by name (runs of
    digits compared as numbers), stacked along D. A `.tif`/`.tiff` file: its
    pages, stacked along D. A volume that is not 3-D, has an axis shorter than
    2, or holds NaN or infinite values is a `ValueError` saying so.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no volume at {path}")
    name = path.name.lower()
    if path.is_dir():
        volume = _tiff_folder(path)
    elif name.endswith(".npy"):
        volume = _npy(path)
    elif name.endswith(NIFTI_SUFFIXES):
        volume = _nifti(path)
    elif name.endswith(TIFF_SUFFIXES):
        volume = _tiff_pages(path)
    else:
        raise ValueError(
            f"{path}: unknown volume format; expected a .npy, .nii or .nii.gz file, a "
            ".tif/.tiff stack, or a folder of .tif/.tiff slices"
        )
    return _checked(volume, str(path))


def _npy(path: Path) -> np.ndarray:
    """A .npy array (never a pickle); a damaged file is a `ValueError` naming it."""
    try:
        return np.load(path, allow_pickle=False)
    # numpy parses the header with tokenize/ast: a damaged one raises their errors too
    except (ValueError, EOFError, OSError, SyntaxError, tokenize.TokenError) as error:
        raise ValueError(f"{path}: cannot be read as a .npy array ({error})") from None


def _checked(volume, source: str) -> np.ndarray:
    """`volume` as float32 (D, H, W) after checking it is a finite, real 3-D volume."""
    volume = np.asarray(volume)
    if volume.dtype == object or not (
        np.issubdtype(volume.dtype, np.integer) or np.issubdtype(volume.dtype, np.floating)
    ):
        raise ValueError(f"{source}: a volume must hold real numbers, got dtype {volume.dtype}")
    if volume.ndim != 3:
        raise ValueError(f"{source}: a volume must be 3-D (D, H, W), got shape {volume.shape}")
    if min(volume.shape) < 2:
        raise ValueError(f"{source}: every axis needs at least 2 voxels, got shape {volume.shape}")
    volume = volume.astype(np.float32)
    bad = ~np.isfinite(volume)
    if bad.any():
        nans = int(np.isnan(volume).sum())
        raise ValueError(
            f"{source}: the volume holds {nans} NaN and {int(bad.sum()) - nans} infinite "
            "value(s); fill or mask them before compressing"
        )
    return volume


def _nifti(path: Path) -> np.ndarray:
    import nibabel

    try:
        image = nibabel.load(str(path))
    except Exception as error:  # nibabel raises many kinds for an unreadable file
        raise ValueError(f"{path}: cannot be read as NIfTI ({error})") from error
    volume = np.asarray(image.get_fdata(dtype=np.float32))
    while volume.ndim > 3 and volume.shape[-1] == 1:
        volume = volume[..., 0]
    return volume


def _natural_key(name: str) -> list:
    """Sort key comparing runs of digits as numbers: slice_9 before slice_10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _image_array(image, source: str) -> np.ndarray:
    array = np.asarray(image)
    if array.ndim != 2:
        raise ValueError(
            f"{source}: slices must be single-channel (greyscale) images, got an image of "
            f"shape {array.shape} (mode {image.mode})"
        )
    return array


def _stack(slices: list[np.ndarray], names: list[str], source: str) -> np.ndarray:
    first = slices[0].shape
    for name, array in zip(names, slices, strict=True):
        if array.shape != first:
            raise ValueError(
                f"{source}: slices differ in size: {names[0]} is {first[0]}×{first[1]}, "
                f"{name} is {array.shape[0]}×{array.shape[1]}"
            )
    return np.stack(slices)


def _tiff_folder(folder: Path) -> np.ndarray:
    from PIL import Image

    files = sorted(
        (p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(TIFF_SUFFIXES)),
        key=lambda p: _natural_key(p.name),
    )
    if not files:
        raise ValueError(f"{folder}: the folder holds no .tif/.tiff slices")
    slices = []
    for file in files:
        with Image.open(file) as image:
            slices.append(_image_array(image, str(file)))
    return _stack(slices, [f.name for f in files], str(folder))


def _tiff_pages(path: Path) -> np.ndarray:
    from PIL import Image, ImageSequence

    with Image.open(path) as image:
        pages = [_image_array(page, str(path)) for page in ImageSequence.Iterator(image)]
    return _stack(pages, [f"page {i}" for i in range(len(pages))], str(path))


# ---------------------------------------------------------------- preparing


def foreground_box(volume: np.ndarray, threshold: float = 0.0) -> tuple[slice, slice, slice]:
    """The bounding box of the voxels v > min + threshold·(max − min), as slices."""
    lo, hi = float(volume.min()), float(volume.max())
    mask = volume > lo + threshold * (hi - lo)
    if not mask.any():
        raise ValueError(
            f"no voxel lies above the crop threshold {threshold} of the intensity range "
            f"[{lo}, {hi}]"
        )
    box = []
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(mask.any(axis=others))
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def resample_matrix(n_in: int, n_out: int) -> np.ndarray:
    """The (n_out, n_in) linear map resampling one axis; each row sums to 1.

    Shrinking (n_out < n_in): area averaging, M[i, j] = |[j, j+1) ∩ [i·s, (i+1)·s)| / s
    with s = n_in/n_out. Growing: linear interpolation at the input position
    (i + ½)·n_in/n_out − ½ of output voxel i's centre (clamped to the ends).
    Equal sizes: the identity.
    """
    if n_in < 1 or n_out < 1:
        raise ValueError(f"axis sizes must be >= 1, got {n_in} -> {n_out}")
    if n_out == n_in:
        return np.eye(n_in)
    i = np.arange(n_out, dtype=np.float64)[:, None]
    j = np.arange(n_in, dtype=np.float64)[None, :]
    if n_out < n_in:
        s = n_in / n_out
        overlap = np.minimum(j + 1, (i + 1) * s) - np.maximum(j, i * s)
        return np.clip(overlap, 0.0, None) / s
    pos = np.clip((i + 0.5) * n_in / n_out - 0.5, 0.0, n_in - 1)
    return np.clip(1.0 - np.abs(pos - j), 0.0, None)  # the hat function: linear weights


def resample(volume: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """`volume` resampled to `shape` with `resample_matrix` along each axis (float32)."""
    out = np.asarray(volume, np.float32)
    for axis, n_out in enumerate(shape):
        matrix = resample_matrix(out.shape[axis], int(n_out)).astype(np.float32)
        out = np.moveaxis(np.tensordot(matrix, out, axes=([1], [axis])), 0, axis)
    return np.ascontiguousarray(out)


def normalise(volume: np.ndarray) -> np.ndarray:
    """(v − min)/(max − min): the volume in [0, 1] with data range exactly 1 (float32)."""
    lo, hi = float(volume.min()), float(volume.max())
    if not hi > lo:
        raise ValueError(f"the volume is constant ({lo}); there is nothing to compress")
    return ((volume - lo) / (hi - lo)).astype(np.float32)


def prepare_volume(
    volume: np.ndarray, shape: tuple[int, int, int], crop_threshold: float | None = None
) -> np.ndarray:
    """Crop (if `crop_threshold` is not None), resample to `shape`, normalise to [0, 1]."""
    volume = _checked(volume, "volume")
    shape = _checked_shape(shape)
    if crop_threshold is not None:
        volume = volume[foreground_box(volume, crop_threshold)]
    return normalise(resample(volume, shape))


def _checked_shape(shape) -> tuple[int, int, int]:
    if isinstance(shape, int | np.integer):
        shape = (int(shape),) * 3
    shape = tuple(shape)
    if len(shape) != 3 or any(
        isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 2 for n in shape
    ):
        raise ValueError(f"shape must be 3 ints >= 2 (or one int: a cube), got {shape!r}")
    return tuple(int(n) for n in shape)


# ---------------------------------------------------------------- the volumes


def colin27_volume(side: int) -> np.ndarray:
    """The Colin27 scan cropped to the brain and prepared at side³ voxels (cached).

    A missing scan is a `FileNotFoundError` naming the Debian package that has it.
    """
    shape = _checked_shape(side)
    if not COLIN27_PATH.is_file():
        raise FileNotFoundError(
            f"the Colin27 MRI scan {COLIN27_PATH} is missing; it comes with the Debian "
            f"package {COLIN27_PACKAGE} (`sudo apt-get install {COLIN27_PACKAGE}`)"
        )
    recipe = {
        "format": VOLUME_FORMAT,
        "source": COLIN27_PATH.name,
        "sha256": file_sha256(COLIN27_PATH),
        "shape": list(shape),
        "crop_threshold": 0.0,
        "method": METHOD,
    }

    def build():
        return {"volume": prepare_volume(load_volume(COLIN27_PATH), shape, crop_threshold=0.0)}

    return cached_arrays("volume_colin27", recipe, build)["volume"]


def user_volume(
    path: str | Path, shape: int | tuple[int, int, int], crop_threshold: float | None = None
) -> np.ndarray:
    """The volume at `path` (see `load_volume`) prepared at `shape` (cached by file stamps)."""
    path = Path(path).resolve()
    shape = _checked_shape(shape)
    if not path.exists():
        raise FileNotFoundError(f"no volume at {path}")
    files = sorted(path.iterdir()) if path.is_dir() else [path]
    stamps = [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files if f.is_file()]
    recipe = {
        "format": VOLUME_FORMAT,
        "path": str(path),
        "files": stamps,
        "shape": list(shape),
        "crop_threshold": crop_threshold,
        "method": METHOD,
    }

    def build():
        return {"volume": prepare_volume(load_volume(path), shape, crop_threshold)}

    return cached_arrays("volume_user", recipe, build)["volume"]
