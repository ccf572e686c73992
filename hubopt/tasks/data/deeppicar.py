"""A loader for lane-following data in the DeepPiCar layout: a folder of labelled frames.

DeepPiCar (David Tian's Raspberry Pi car) turns each recorded drive (video)
into one image per frame, with the steering angle in the file name: its
`save_image_and_steering_angle` writes `"%s_%03d_%03d.png" % (video, frame,
angle)`, e.g. `video01_042_087.png`. The angle is in degrees, 90 straight
ahead, below 90 left and above 90 right; this loader takes 45° either side of
straight as full lock (angles beyond are clipped).

`load_deeppicar_folder` reads such a folder into the arrays of the CarRacing
data set (`hubopt.tasks.data.carracing`), so either can feed the lane-keeping
task:

    frames    (N, H, W, 3) uint8    RGB, area-averaged to `frame_size`
    steering  (N,) float32          clip((angle - 90) / 45, -1, 1): -1 is 45° left,
                                    0 straight, +1 45° right (CarRacing's sign)
    episode   (N,) int32            index of the video name, in sorted order
    split     (N,) int8             0 train, 1 valid, 2 test: by video, 75/10/15

Frames are ordered by video, then frame number. The split is by video (see
`hubopt.tasks.data.splits`), drawn from `seed`. `.jpg`/`.jpeg` files named the
same way are read too; other files in the folder are ignored.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from hubopt.tasks.data.carracing import parse_frame_size, resize_area
from hubopt.tasks.data.splits import split_by_episode

__all__ = ["EXPECTED_NAME", "load_deeppicar_folder", "parse_frame_name", "steering_from_degrees"]

EXPECTED_NAME = "<video>_<frame:03d>_<angle:03d>.png"
STRAIGHT_DEGREES = 90.0
FULL_LOCK_DEGREES = 45.0
"""The angle change from straight that maps to steering ±1."""

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_NAME_PATTERN = re.compile(
    r"^(?P<video>.+)_(?P<frame>\d+)_(?P<angle>-?\d+)\.(?:png|jpg|jpeg)$", re.IGNORECASE
)


def steering_from_degrees(angle: np.ndarray | float) -> np.ndarray:
    """DeepPiCar's angle in degrees (90 straight) as steering: `(angle - 90) / 45` in [-1, 1]."""
    steering = (np.asarray(angle, dtype=np.float64) - STRAIGHT_DEGREES) / FULL_LOCK_DEGREES
    return np.clip(steering, -1.0, 1.0).astype(np.float32)


def parse_frame_name(name: str) -> tuple[str, int, int]:
    """`(video, frame, angle in degrees)` from a file name; `ValueError` if it does not fit."""
    match = _NAME_PATTERN.match(name)
    if match is None:
        raise ValueError(f"cannot parse the file name {name!r}; expected {EXPECTED_NAME}")
    return match["video"], int(match["frame"]), int(match["angle"])


def load_deeppicar_folder(
    path: str | os.PathLike, frame_size: int | Sequence[int], *, seed: int = 0
) -> dict[str, np.ndarray]:
    """The frames and steering labels of a DeepPiCar folder, split by video (see the module doc).

    Raises `FileNotFoundError` for a missing folder, `NotADirectoryError` for a
    file, and `ValueError` for a folder without any image, an image whose name
    does not parse, two images of one video frame, fewer than 3 videos, or an
    image that cannot be read (each naming the file or the expected pattern).
    """
    folder = Path(path)
    if not folder.exists():
        raise FileNotFoundError(f"the DeepPiCar folder {folder} does not exist")
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder} is not a folder of DeepPiCar frames")
    height, width = parse_frame_size(frame_size)
    images = sorted(
        entry
        for entry in folder.iterdir()
        if entry.suffix.lower() in _IMAGE_SUFFIXES
        and not entry.name.startswith(".")
        and entry.is_file()
    )
    if not images:
        raise ValueError(f"no images named {EXPECTED_NAME} in {folder}")

    labelled = {}
    for image in images:
        try:
            video, frame, angle = parse_frame_name(image.name)
        except ValueError:
            raise ValueError(
                f"cannot parse the image name {image}; DeepPiCar frames are named {EXPECTED_NAME}"
            ) from None
        if (video, frame) in labelled:
            raise ValueError(
                f"two images of frame {frame} of video {video!r}: "
                f"{labelled[video, frame][0].name} and {image.name}"
            )
        labelled[video, frame] = (image, angle)

    videos = sorted({video for video, _ in labelled})
    if len(videos) < 3:
        raise ValueError(
            f"{folder} holds {len(videos)} video(s) ({', '.join(videos)}); a split by video "
            "into train/valid/test needs at least 3"
        )
    video_index = {video: index for index, video in enumerate(videos)}
    order = sorted(labelled, key=lambda key: (video_index[key[0]], key[1]))

    frames = np.empty((len(order), height, width, 3), dtype=np.uint8)
    for row, key in enumerate(order):
        frames[row] = resize_area(_read_rgb(labelled[key][0]), (height, width))
    episode = np.array([video_index[video] for video, _ in order], dtype=np.int32)
    return {
        "frames": frames,
        "steering": steering_from_degrees([labelled[key][1] for key in order]),
        "episode": episode,
        "split": split_by_episode(episode, len(videos), seed),
    }


def _read_rgb(image: Path) -> np.ndarray:
    """The image as `(h, w, 3) uint8` RGB; `ValueError` naming the file if it cannot be read."""
    try:
        with Image.open(image) as opened:
            return np.asarray(opened.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError, SyntaxError) as error:  # PIL's decoders raise all of these
        raise ValueError(f"cannot read the image {image}: {error}") from error
