"""write_atomic: all or nothing, and no clobbering when asked not to."""

import os
import stat

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


def test_new_file_gets_the_umask_mode_and_an_overwrite_keeps_the_old_mode(tmp_path):
    old_umask = os.umask(0o027)
    try:
        path = write_atomic(tmp_path / "r.json", "{}")
        assert stat.S_IMODE(path.stat().st_mode) == 0o640  # 0o666 less the umask
        os.chmod(path, 0o604)
        write_atomic(path, "[]")
        assert stat.S_IMODE(path.stat().st_mode) == 0o604
        assert path.read_text() == "[]"
    finally:
        os.umask(old_umask)
