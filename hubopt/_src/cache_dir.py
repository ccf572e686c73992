"""hubopt's cache folder: where downloaded and generated files live, and whether it
can take a new file.

The root is `$HUBOPT_CACHE` if set and non-empty, else `~/.cache/hubopt`. A cache may
be read-only (a shared, prepared cache): what it holds is still read, and only a
missing or damaged file needs a writable folder, which `probe_writable` checks before
any slow work (a download, a build) starts.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

CACHE_ENV_VAR = "HUBOPT_CACHE"


def cache_root() -> Path:
    """The cache root: `$HUBOPT_CACHE` if set and non-empty, else `~/.cache/hubopt`."""
    configured = os.environ.get(CACHE_ENV_VAR)
    root = Path(configured) if configured else Path("~/.cache/hubopt")
    return root.expanduser()


def probe_writable(directory: Path) -> None:
    """Creates `directory` and a (deleted) probe file in it; the `OSError` if either fails.

    Checked by doing, not by permission bits: those say nothing about a read-only
    file system, and nothing at all for root.
    """
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=directory, prefix=".probe."):
        pass
