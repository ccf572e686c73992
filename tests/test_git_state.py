"""git_state / git_commit read the checkout the package lives in."""

import subprocess
from pathlib import Path

from hubopt._src.git_state import git_commit, git_state

REPO = Path(__file__).resolve().parents[1]


def test_commit_matches_git_and_short_is_a_prefix():
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    assert git_commit() == head and git_state()["commit"] == head
    assert head.startswith(git_commit(short=True)) and len(git_commit(short=True)) < len(head)
    assert isinstance(git_state()["dirty"], bool)
