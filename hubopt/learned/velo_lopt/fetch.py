"""Download and cache the official VeLO checkpoint, safely.

    path = fetch_velo()            # ~/.cache/hubopt/velo/params (or $HUBOPT_CACHE/velo/params)

The file (9,282,564 bytes) is streamed over HTTPS into a temporary file in the
cache folder, with a progress bar. Only when it is complete, of the expected
size and a readable VeLO checkpoint is it renamed into place; its SHA-256 is
then written beside it (``params.sha256``) and checked by `verify_cached` on
every later load. A failed or interrupted download never leaves a partial file
and never replaces a good one.

Offline machines: download the file elsewhere and install it with
``hubopt velo download --url file:///path/to/params``.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from hubopt._src.atomic_write import write_atomic
from hubopt._src.cache_dir import CACHE_ENV_VAR, cache_root
from hubopt._src.file_hash import file_sha256

__all__ = [
    "VELO_SIZE",
    "VELO_URL",
    "VeloDownloadError",
    "fetch_velo",
    "velo_cache_path",
    "verify_cached",
]

VELO_URL = (
    "https://storage.googleapis.com/gresearch/learned_optimization/pretrained_lopts/"
    "aug12_continue_on_bigger_2xbs_200kstep_bigproblem_v2_5620/params"
)
VELO_SIZE = 9_282_564  # bytes of the released checkpoint
DEFAULT_TIMEOUT_S = 30.0  # per socket operation (connect, each read)
_CHUNK = 1 << 16


class VeloDownloadError(RuntimeError):
    """The VeLO checkpoint could not be downloaded or installed into the cache."""


class _CacheWriteError(Exception):
    """Writing into the cache failed (a full disk, a read-only folder): not the network."""


def _unwritable(folder: Path, error: OSError, untouched: bool = True) -> VeloDownloadError:
    return VeloDownloadError(
        f"the cache folder {folder} cannot take the VeLO checkpoint ({error}): free space "
        f"there, or choose a writable folder (hubopt velo download --cache-dir DIR, or the "
        f"{CACHE_ENV_VAR} environment variable)."
        + (" A checkpoint cached before is untouched." if untouched else "")
    )


def velo_cache_path(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the checkpoint lives: ``<cache>/velo/params``.

    ``<cache>`` is ``cache_dir``, else ``$HUBOPT_CACHE``, else ``~/.cache/hubopt``.
    """
    root = cache_root() if cache_dir is None else Path(cache_dir).expanduser()
    return root / "velo" / "params"


def _sha_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def verify_cached(path: str | os.PathLike) -> str:
    """Checks ``path`` against the SHA-256 recorded beside it; returns the digest.

    Raises `VeloDownloadError` when the record is missing or does not match
    (a corrupted or replaced file), with the command that repairs it.
    """
    path = Path(path)
    sha_file = _sha_path(path)
    fix = "Re-download it with `hubopt velo download --force`."
    if not path.is_file():
        raise VeloDownloadError(f"{path} does not exist. Run `hubopt velo download`.")
    if not sha_file.is_file():
        raise VeloDownloadError(f"{path} has no recorded SHA-256 ({sha_file} is missing). {fix}")
    recorded = sha_file.read_text().split()
    digest = file_sha256(path)
    if not recorded or recorded[0].lower() != digest:
        raise VeloDownloadError(
            f"{path} is corrupted: its SHA-256 is {digest}, but {recorded[0] if recorded else '?'} "
            f"was recorded when it was downloaded. {fix}"
        )
    return digest


def _check_url(url: str) -> None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme in ("https", "file"):
        return
    if parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1"):
        return  # local test servers only
    raise ValueError(f"url must be https:// (or http:// to localhost, or file://), got {url!r}")


def _offline_help(url: str, dest: Path, why: str) -> str:
    return (
        f"could not download the VeLO checkpoint from {url}: {why}\n"
        "If this machine has no internet access, install the file by hand:\n"
        f"  1. on a machine with access: curl -fL -o params '{VELO_URL}'\n"
        f"     (it must be exactly {VELO_SIZE:,} bytes)\n"
        "  2. copy it here and run: hubopt velo download --url file:///ABSOLUTE/PATH/TO/params"
        f"{'' if dest == velo_cache_path() else f' --cache-dir {dest.parent.parent}'}\n"
        f"The checkpoint goes to {dest}."
    )


def _download_to(url: str, tmp: Path, expected_size: int, timeout: float, progress: bool) -> str:
    """Streams ``url`` into ``tmp``; returns the SHA-256. Raises VeloDownloadError."""
    from tqdm.auto import tqdm

    req = urllib.request.Request(url, headers={"User-Agent": "hubopt-velo-fetch"})
    h = hashlib.sha256()
    got = 0
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        status = getattr(resp, "status", None)
        if status not in (None, 200):
            raise VeloDownloadError(f"HTTP status {status} from {url}")
        length = resp.headers.get("Content-Length")
        if length is not None and int(length) != expected_size:
            raise VeloDownloadError(
                f"{url} announces {int(length):,} bytes, expected {expected_size:,}: "
                "not the VeLO checkpoint"
            )
        with (
            open(tmp, "wb") as f,
            tqdm(
                total=expected_size,
                unit="B",
                unit_scale=True,
                desc="VeLO params",
                disable=not progress,
                leave=False,
            ) as bar,
        ):
            while True:
                block = resp.read(_CHUNK)
                if not block:
                    break
                got += len(block)
                if got > expected_size:
                    raise VeloDownloadError(f"{url} sent more than {expected_size:,} bytes")
                try:
                    f.write(block)
                except OSError as e:
                    raise _CacheWriteError(str(e)) from e
                h.update(block)
                bar.update(len(block))
            try:
                f.flush()
                os.fsync(f.fileno())
            except OSError as e:
                raise _CacheWriteError(str(e)) from e
    if got != expected_size:
        raise VeloDownloadError(
            f"download incomplete: got {got:,} of {expected_size:,} bytes from {url}"
        )
    return h.hexdigest()


def fetch_velo(
    cache_dir: str | os.PathLike | None = None,
    url: str | None = None,
    *,
    expected_size: int | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Downloads the official VeLO checkpoint into the cache (if needed); returns its path.

    A cached file whose recorded SHA-256 matches is reused unless ``force``.
    ``url`` defaults to the public HTTPS mirror (`VELO_URL`), ``expected_size``
    to `VELO_SIZE`; ``timeout`` bounds every socket operation. The new file
    replaces the cached one only when it is complete, exactly ``expected_size``
    bytes and a valid VeLO checkpoint.
    """
    url = VELO_URL if url is None else str(url)
    _check_url(url)
    expected_size = VELO_SIZE if expected_size is None else int(expected_size)
    dest = velo_cache_path(cache_dir)
    if not force and dest.is_file():
        try:
            verify_cached(dest)
            return dest
        except VeloDownloadError:
            pass  # corrupt or unrecorded: download afresh (the old file stays until success)
    try:  # before contacting the server: a folder that cannot take the file fails now
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        os.close(fd)
    except OSError as e:
        raise _unwritable(dest.parent, e) from None
    tmp = Path(tmp_name)
    try:
        try:
            digest = _download_to(url, tmp, int(expected_size), float(timeout), progress)
        except _CacheWriteError as e:
            raise _unwritable(dest.parent, e.__cause__) from None
        except urllib.error.HTTPError as e:
            raise VeloDownloadError(_offline_help(url, dest, f"HTTP {e.code} {e.reason}")) from None
        except TimeoutError:
            raise VeloDownloadError(
                _offline_help(url, dest, f"timed out (no data for {timeout} s)")
            ) from None
        except urllib.error.URLError as e:
            raise VeloDownloadError(_offline_help(url, dest, str(e.reason))) from None
        except VeloDownloadError as e:
            raise VeloDownloadError(_offline_help(url, dest, str(e))) from None
        except (OSError, ValueError) as e:  # connection reset, IncompleteRead, ...
            raise VeloDownloadError(_offline_help(url, dest, f"{type(e).__name__}: {e}")) from None
        from hubopt.learned.velo_lopt.checkpoint import load_velo_theta

        try:
            load_velo_theta(tmp)  # a complete file must also be a VeLO checkpoint
        except ValueError as e:
            raise VeloDownloadError(
                f"the file from {url} has the right size but is not a VeLO checkpoint: {e}"
            ) from None
        try:
            # the checksum first: a file without its record is downloaded again, a
            # record without its file (or beside the old one) is never trusted
            _sha_path(dest).unlink(missing_ok=True)
            os.replace(tmp, dest)
            write_atomic(_sha_path(dest), f"{digest}  {dest.name}\n")
        except OSError as e:  # the old file may be replaced, but it has no record now
            raise _unwritable(dest.parent, e, untouched=False) from None
    finally:
        tmp.unlink(missing_ok=True)
    return dest
