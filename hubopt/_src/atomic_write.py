"""Writing a file so that readers see either the old file or the whole new one.

The data goes to a temporary file in the destination's folder, is fsynced,
then renamed over the destination (or hard-linked, when an existing file must
not be replaced). On any error the temporary file is removed and an existing
destination is left untouched. The new file gets the permissions a plain
`open(path, "w")` would give it (0o666 less the umask; an overwritten file's
own mode), not the owner-only mode of the temporary file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: str | os.PathLike, data: bytes | str, *, overwrite: bool = True) -> Path:
    """Writes `data` (bytes, or str as UTF-8) to `path` atomically; returns the path.

    With `overwrite=False` an existing `path` raises `FileExistsError` and is
    not touched, even when another writer creates it concurrently.
    """
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = _mode_for(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # atomic; fails if path exists
            except FileExistsError:
                raise FileExistsError(f"{path} already exists; refusing to overwrite it") from None
            except OSError:  # a filesystem without hard links
                if path.exists():
                    raise FileExistsError(
                        f"{path} already exists; refusing to overwrite it"
                    ) from None
                os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _mode_for(path: Path) -> int:
    """The existing file's permission bits, else 0o666 less the process umask."""
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask
