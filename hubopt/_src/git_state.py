"""The git commit of the hubopt checkout, for records and provenance files."""

from __future__ import annotations

import subprocess
from pathlib import Path

_REPO = Path(__file__).resolve().parents[2]


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(
            ["git", *args], cwd=_REPO, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def git_commit(short: bool = False) -> str:
    """HEAD's hash (abbreviated with `short`), or "unknown" outside a git checkout."""
    head = _git("rev-parse", *(["--short"] if short else []), "HEAD")
    return head or "unknown"


def git_state() -> dict:
    """`{"commit", "dirty"}` of the checkout (tracked files only); None values outside git."""
    head = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if head else None
    return {"commit": head, "dirty": None if status is None else status != ""}
