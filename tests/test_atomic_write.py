"""write_atomic: all or nothing, and no clobbering when asked not to."""

import os

import pytest

from hubopt._src.atomic_write import write_atomic


def test_writes_bytes_and_text(tmp_path):
    write_atomic(tmp_path / "a" / "b.bin", b"\x00\x01")
    write_atomic(tmp_path / "t.txt", "σ ok")
    assert (tmp_path / "a" / "b.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "σ ok"


def test_refuses_to_overwrite_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "r.json"
    write_atomic(path, "old")
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        write_atomic(path, "new", overwrite=False)
    assert path.read_text() == "old"
    write_atomic(path, "new")
    assert path.read_text() == "new"
    assert os.listdir(tmp_path) == ["r.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "ckpt"
    write_atomic(path, b"good")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, b"partial")
    assert path.read_bytes() == b"good"
    assert os.listdir(tmp_path) == ["ckpt"]
