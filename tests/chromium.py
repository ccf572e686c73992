"""Headless Chromium for the tests of HTML pages: a page's screenshot as pixels, and a count
of the pixels of one colour (Chromium is installed by `make test`: Debian's chromium)."""

import shutil
import subprocess

import numpy as np


def screenshot(url: str, tmp_path, width: int, height: int) -> np.ndarray:
    """The page at `url` drawn by headless Chromium in a `width` × `height` window, as an
    RGB array (height, width, 3)."""
    from PIL import Image

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "headless Chromium is missing: make test installs Debian's chromium"
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--window-size={width},{height}",
            f"--screenshot={shot}",
            url,
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (height, width)
    return pixels


def count(pixels: np.ndarray, rgb, tol: int = 12) -> int:
    """How many pixels are within `tol` of colour `rgb` in every channel."""
    return int(np.sum(np.all(np.abs(pixels[..., :3].astype(int) - rgb) <= tol, axis=-1)))
