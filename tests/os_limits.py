"""Real operating-system limits for the tests of what hubopt does when it cannot write.

- `read_only(folder)`: the folder tree becomes unwritable for this very process: mode
  0o555 for a normal user; for root, which ignores permission bits, the immutable
  attribute (`chattr +i`), which binds root too. Restored on exit.
- `run_python(code, max_file_bytes=N)`: the snippet runs in a child process that may not
  grow a file past N bytes (RLIMIT_FSIZE, SIGXFSZ ignored): a write past it fails with
  an `OSError`, as on a full disk (EFBIG instead of ENOSPC; the code under test handles
  every `OSError` of a write alike). The snippet prints one JSON line last.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def read_only(folder: Path):
    folders = [folder, *(p for p in folder.rglob("*") if p.is_dir())]
    if os.geteuid() != 0:
        for path in folders:
            path.chmod(0o555)
        try:
            yield
        finally:
            for path in folders:
                path.chmod(0o755)
        return
    made = []
    try:
        for path in folders:
            done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
            if done.returncode != 0:
                pytest.skip(
                    f"running as root, and this file system cannot make {path} immutable "
                    f"(chattr: {done.stderr.strip()}): no way to make a folder read-only for root"
                )
            made.append(path)
        yield
    finally:
        for path in made:
            subprocess.run(["chattr", "-i", str(path)], check=True)


def run_python(code: str, *, max_file_bytes: int, env: dict[str, str] | None = None) -> dict:
    """Runs `code` (the repo importable) under a file-size limit; returns its last JSON line."""
    prelude = (
        "import resource, signal\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"  # a failed write, not a kill
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({max_file_bytes}, {max_file_bytes}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", prelude + code],
        env={**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu", **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )
    if out.returncode != 0:
        raise AssertionError(f"child failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])
