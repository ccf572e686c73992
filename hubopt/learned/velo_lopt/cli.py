"""``hubopt velo download``: fetch the official VeLO checkpoint into the cache.

CLI protocol (hubopt/bench/cli.py): `add_arguments(parser)` fills the ``velo``
subparser, `run(args)` executes it and returns the exit code.
"""

from __future__ import annotations

import argparse
import sys

from hubopt.learned.velo_lopt import fetch as velo_fetch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="velo_command", metavar="COMMAND")
    dl = sub.add_parser(
        "download",
        help="download the official VeLO checkpoint into the cache",
        description=(
            "Download the official VeLO checkpoint (9,282,564 bytes) into the cache "
            "($HUBOPT_CACHE or ~/.cache/hubopt), verify it and record its SHA-256. "
            "Offline: download the file elsewhere and pass --url file:///path/to/params."
        ),
    )
    dl.add_argument(
        "--cache-dir", default=None, help="cache folder (default: $HUBOPT_CACHE or ~/.cache/hubopt)"
    )
    dl.add_argument(
        "--url", default=None, help=f"where to download from (default: {velo_fetch.VELO_URL})"
    )
    dl.add_argument(
        "--timeout",
        type=float,
        default=velo_fetch.DEFAULT_TIMEOUT_S,
        help="seconds to wait on the network before giving up (default: %(default)s)",
    )
    dl.add_argument(
        "--force", action="store_true", help="download again even if a verified copy is cached"
    )
    dl.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    if getattr(args, "velo_command", None) != "download":
        print("usage: hubopt velo download [--cache-dir DIR] [--url URL]", file=sys.stderr)
        return 2
    try:
        path = velo_fetch.fetch_velo(
            args.cache_dir,
            args.url,
            timeout=args.timeout,
            force=args.force,
            progress=not args.no_progress,
        )
    except (velo_fetch.VeloDownloadError, ValueError) as e:
        print(f"hubopt velo download: {e}", file=sys.stderr)
        return 1
    digest = velo_fetch.verify_cached(path)
    print(f"VeLO checkpoint: {path} (sha256 {digest})")
    return 0
