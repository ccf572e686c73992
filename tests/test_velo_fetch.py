"""Downloading the VeLO checkpoint, against a real HTTP server on 127.0.0.1."""

import argparse
import hashlib
import http.server
import socket
import threading
import time

import jax
import numpy as np
import pytest
from os_limits import read_only, run_python

from hubopt.learned.velo_lopt import cli as velo_cli
from hubopt.learned.velo_lopt import fetch as velo_fetch
from hubopt.learned.velo_lopt.checkpoint import save_velo_theta
from hubopt.learned.velo_lopt.fetch import (
    VeloDownloadError,
    fetch_velo,
    velo_cache_path,
    verify_cached,
)
from hubopt.learned.velo_lopt.transform import init_velo_theta, velo


@pytest.fixture(scope="module")
def payload(tmp_path_factory):
    """A small but real VeLO checkpoint file (H=8, K=2) to serve."""
    path = tmp_path_factory.mktemp("src") / "params"
    save_velo_theta(path, init_velo_theta(jax.random.PRNGKey(0), 8, 2), gen_id="test")
    return path.read_bytes()


@pytest.fixture(scope="module")
def server(payload):
    """Serves /good, /truncated (Content-Length lies, then the connection is cut),
    /missing (404), /stall (headers never come), /wrongsize, /garbage."""
    release = threading.Event()
    hits = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _send(self, body, length=None):
            self.send_response(200)
            self.send_header("Content-Length", str(len(body) if length is None else length))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            hits[self.path] = hits.get(self.path, 0) + 1
            if self.path == "/good":
                self._send(payload)
            elif self.path == "/truncated":
                self._send(payload[: len(payload) // 2], length=len(payload))
                self.close_connection = True
            elif self.path == "/wrongsize":
                self._send(payload + b"\0" * 10)
            elif self.path == "/garbage":
                self._send(b"\x93" * len(payload))
            elif self.path == "/stall":
                release.wait(30)  # accept the connection, send nothing
            else:
                self.send_error(404, "Not Found")

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", hits
    release.set()
    srv.shutdown()
    srv.server_close()


def _files(cache):
    folder = cache / "velo"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_cache_path(tmp_path, monkeypatch):
    monkeypatch.setenv("HUBOPT_CACHE", str(tmp_path / "c"))
    assert velo_cache_path() == tmp_path / "c" / "velo" / "params"
    assert velo_cache_path(tmp_path / "d") == tmp_path / "d" / "velo" / "params"
    monkeypatch.delenv("HUBOPT_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert velo_cache_path() == tmp_path / "home" / ".cache" / "hubopt" / "velo" / "params"


def test_download_good_file_records_sha_and_reuses_cache(tmp_path, server, payload):
    base, hits = server
    path = fetch_velo(tmp_path, f"{base}/good", expected_size=len(payload), progress=False)
    assert path == velo_cache_path(tmp_path)
    assert path.read_bytes() == payload
    assert _files(tmp_path) == ["params", "params.sha256"]
    digest = hashlib.sha256(payload).hexdigest()
    assert (path.parent / "params.sha256").read_text().split()[0] == digest
    assert verify_cached(path) == digest
    n = hits["/good"]
    assert fetch_velo(tmp_path, f"{base}/good", expected_size=len(payload)) == path
    assert hits["/good"] == n  # verified cache reused, no second download


@pytest.mark.parametrize(
    "route, message",
    [
        ("/truncated", "incomplete|IncompleteRead"),
        ("/missing", "HTTP 404"),
        ("/wrongsize", "announces"),
        ("/garbage", "not a VeLO checkpoint"),
    ],
)
def test_failed_download_leaves_nothing(tmp_path, server, payload, route, message):
    base, _ = server
    with pytest.raises(VeloDownloadError, match=message):
        fetch_velo(tmp_path, base + route, expected_size=len(payload), progress=False)
    assert _files(tmp_path) == []


def test_failed_redownload_keeps_good_file(tmp_path, server, payload):
    base, _ = server
    path = fetch_velo(tmp_path, f"{base}/good", expected_size=len(payload), progress=False)
    for route in ("/truncated", "/missing", "/garbage"):
        with pytest.raises(VeloDownloadError):
            fetch_velo(
                tmp_path, base + route, expected_size=len(payload), force=True, progress=False
            )
        assert path.read_bytes() == payload
        assert _files(tmp_path) == ["params", "params.sha256"]
        verify_cached(path)


def test_stalled_connection_times_out_quickly(tmp_path, server, payload):
    base, _ = server
    t0 = time.perf_counter()
    with pytest.raises(VeloDownloadError, match="timed out") as e:
        fetch_velo(
            tmp_path, f"{base}/stall", expected_size=len(payload), timeout=0.5, progress=False
        )
    assert time.perf_counter() - t0 < 5
    assert _files(tmp_path) == []
    assert "hubopt velo download --url file://" in str(e.value)  # manual steps offered


def test_unreachable_server_gives_manual_steps(tmp_path, payload):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(VeloDownloadError) as e:
        fetch_velo(
            tmp_path,
            f"http://127.0.0.1:{port}/params",
            expected_size=len(payload),
            timeout=2,
            progress=False,
        )
    msg = str(e.value)
    assert "curl -fL -o params" in msg and velo_fetch.VELO_URL in msg and "9,282,564" in msg


def test_only_https_or_local_urls(tmp_path):
    with pytest.raises(ValueError, match="https"):
        fetch_velo(tmp_path, "http://example.com/params")
    with pytest.raises(ValueError, match="https"):
        fetch_velo(tmp_path, "ftp://127.0.0.1/params")
    assert velo_fetch.VELO_URL.startswith("https://storage.googleapis.com/")
    assert velo_fetch.VELO_SIZE == 9_282_564


def test_install_from_file_url_and_corruption_is_caught(tmp_path, payload, monkeypatch):
    src = tmp_path / "manual" / "params"
    src.parent.mkdir()
    src.write_bytes(payload)
    cache = tmp_path / "cache"
    path = fetch_velo(cache, src.as_uri(), expected_size=len(payload), progress=False)
    assert path.read_bytes() == payload
    monkeypatch.setenv("HUBOPT_CACHE", str(cache))
    tx = velo(10)  # theta=None: the cached checkpoint, SHA-256 verified
    params = {"w": np.ones((3, 2), np.float32)}
    tx.init(params)
    raw = bytearray(payload)
    raw[len(raw) // 2] ^= 0xFF  # flip one byte inside an array: still parses
    path.write_bytes(bytes(raw))
    with pytest.raises(VeloDownloadError, match="corrupted"):
        verify_cached(path)
    with pytest.raises(VeloDownloadError, match="corrupted"):
        velo(10)
    # A re-download (not forced) repairs a corrupted cache.
    fetch_velo(cache, src.as_uri(), expected_size=len(payload), progress=False)
    assert path.read_bytes() == payload
    (path.parent / "params.sha256").unlink()
    with pytest.raises(VeloDownloadError, match="no recorded SHA-256"):
        velo(10)


def test_velo_without_cached_checkpoint_says_how_to_download(tmp_path, monkeypatch):
    monkeypatch.setenv("HUBOPT_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="hubopt velo download"):
        velo(100)


def _cli(argv):
    parser = argparse.ArgumentParser(prog="hubopt velo")
    velo_cli.add_arguments(parser)
    return velo_cli.run(parser.parse_args(argv))


def test_cli_download(tmp_path, server, payload, monkeypatch, capsys):
    base, _ = server
    monkeypatch.setattr(velo_fetch, "VELO_SIZE", len(payload))  # serve a small file
    rc = _cli(["download", "--cache-dir", str(tmp_path), "--url", f"{base}/good", "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0 and str(velo_cache_path(tmp_path)) in out
    assert hashlib.sha256(payload).hexdigest() in out
    rc = _cli(
        [
            "download",
            "--cache-dir",
            str(tmp_path / "x"),
            "--url",
            f"{base}/missing",
            "--no-progress",
        ]
    )
    assert rc == 1 and "HTTP 404" in capsys.readouterr().err
    assert _cli([]) == 2


# ------------------------------------------------ a cache that cannot take the file


def test_a_read_only_cache_serves_its_checkpoint_and_refuses_a_download(tmp_path, server, payload):
    base, hits = server
    path = fetch_velo(tmp_path, f"{base}/good", expected_size=len(payload), progress=False)
    asked = hits["/good"]
    with read_only(tmp_path):
        assert fetch_velo(tmp_path, f"{base}/good", expected_size=len(payload)) == path
        with pytest.raises(VeloDownloadError, match="cannot take the VeLO checkpoint") as raised:
            fetch_velo(tmp_path, f"{base}/good", expected_size=len(payload), force=True)
    assert hits["/good"] == asked  # refused before asking the server
    message = str(raised.value)
    assert str(path.parent) in message and "--cache-dir" in message and "HUBOPT_CACHE" in message
    assert _files(tmp_path) == ["params", "params.sha256"]
    verify_cached(path)


def test_a_full_disk_during_the_download_says_so_and_keeps_the_old_file(tmp_path, server, payload):
    base, _ = server
    path = fetch_velo(tmp_path, f"{base}/good", expected_size=len(payload), progress=False)
    code = f"""
import json
from hubopt.learned.velo_lopt.fetch import VeloDownloadError, fetch_velo
try:
    fetch_velo({str(tmp_path)!r}, {base + "/good"!r}, expected_size={len(payload)},
               force=True, progress=False)
    print(json.dumps({{"error": None}}))
except VeloDownloadError as e:
    print(json.dumps({{"error": str(e)}}))
"""
    out = run_python(code, max_file_bytes=len(payload) // 3)
    assert out["error"] is not None
    assert "cannot take the VeLO checkpoint" in out["error"]
    assert "untouched" in out["error"] and "internet access" not in out["error"]
    assert _files(tmp_path) == ["params", "params.sha256"]  # no .part left behind
    assert path.read_bytes() == payload
    verify_cached(path)
