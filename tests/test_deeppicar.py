"""The DeepPiCar folder loader, on a tiny folder of solid-colour frames written here."""

import numpy as np
import pytest
from PIL import Image

from hubopt.tasks.data.deeppicar import (
    load_deeppicar_folder,
    parse_frame_name,
    steering_from_degrees,
)
from hubopt.tasks.data.splits import episode_splits, split_sizes

VIDEOS = ["video_b", "road_test_a", "video_c"]  # names with underscores; sorted: road_test_a first
FRAMES = [0, 7, 999, 1000]  # frame numbers sort as numbers, not as text
ANGLES = [90, 45, 135, 180]  # -> 0, -1, +1, +1 (clipped)


def colour(video_index, frame_index):
    return (40 * video_index + 10, 50 * frame_index + 5, 200 - 30 * video_index)


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "frames"
    root.mkdir()
    for v, video in enumerate(VIDEOS):
        for f, (frame, angle) in enumerate(zip(FRAMES, ANGLES, strict=True)):
            name = f"{video}_{frame:03d}_{angle:03d}.png"
            Image.new("RGB", (40, 30), colour(v, f)).save(root / name)
    (root / "notes.txt").write_text("other files are ignored")
    return root


def test_labels_episodes_and_pixels(folder):
    data = load_deeppicar_folder(folder, frame_size=(8, 12), seed=3)
    assert sorted(data) == ["episode", "frames", "split", "steering"]
    assert data["frames"].shape == (12, 8, 12, 3) and data["frames"].dtype == np.uint8
    assert data["steering"].dtype == np.float32 and data["episode"].dtype == np.int32
    assert data["split"].dtype == np.int8
    order = sorted(VIDEOS)
    np.testing.assert_array_equal(data["episode"], np.repeat([0, 1, 2], 4))
    np.testing.assert_array_equal(data["steering"], np.tile([0.0, -1.0, 1.0, 1.0], 3))
    for row in range(12):
        video = VIDEOS.index(order[row // 4])
        expected = np.broadcast_to(np.array(colour(video, row % 4), np.uint8), (8, 12, 3))
        np.testing.assert_array_equal(data["frames"][row], expected)


def test_split_is_by_video_and_deterministic(folder):
    data = load_deeppicar_folder(folder, frame_size=6, seed=3)
    assert data["frames"].shape == (12, 6, 6, 3)
    np.testing.assert_array_equal(data["split"], episode_splits(3, 3)[data["episode"]])
    assert sorted(np.unique(data["split"]).tolist()) == [0, 1, 2]
    again = load_deeppicar_folder(folder, frame_size=6, seed=3)
    np.testing.assert_array_equal(again["split"], data["split"])
    np.testing.assert_array_equal(again["frames"], data["frames"])


def test_steering_mapping():
    np.testing.assert_allclose(
        steering_from_degrees([0, 45, 67.5, 90, 112.5, 135, 200]),
        [-1.0, -1.0, -0.5, 0.0, 0.5, 1.0, 1.0],
    )
    assert parse_frame_name("my_video_01_012_087.png") == ("my_video_01", 12, 87)


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_deeppicar_folder(tmp_path / "nowhere", frame_size=8)
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(NotADirectoryError):
        load_deeppicar_folder(tmp_path / "a_file", frame_size=8)


def test_a_folder_without_images_names_the_pattern(tmp_path):
    (tmp_path / "readme.txt").write_text("no frames here")
    with pytest.raises(ValueError, match=r"<video>_<frame:03d>_<angle:03d>\.png"):
        load_deeppicar_folder(tmp_path, frame_size=8)


def test_an_unparsable_name_is_named(folder):
    Image.new("RGB", (4, 4)).save(folder / "snapshot.png")
    with pytest.raises(ValueError, match=r"snapshot\.png.*<video>_<frame:03d>_<angle:03d>"):
        load_deeppicar_folder(folder, frame_size=8)


def test_an_unreadable_image_is_named(folder):
    (folder / "video_c_1001_090.png").write_bytes(b"\x89PNG but not really")
    with pytest.raises(ValueError, match=r"video_c_1001_090\.png"):
        load_deeppicar_folder(folder, frame_size=8)


def test_duplicate_frames_and_too_few_videos(folder):
    Image.new("RGB", (4, 4)).save(folder / "video_b_007_091.png")
    with pytest.raises(ValueError, match="two images of frame 7"):
        load_deeppicar_folder(folder, frame_size=8)
    for image in folder.glob("video_c_*"):
        image.unlink()
    (folder / "video_b_007_091.png").unlink()
    with pytest.raises(ValueError, match="at least 3"):
        load_deeppicar_folder(folder, frame_size=8)


def test_grey_and_rgba_images_are_read_as_rgb(tmp_path):
    for v in range(3):
        Image.new("L", (10, 10), 100 + v).save(tmp_path / f"grey{v}_000_090.png")
        Image.new("RGBA", (10, 10), (1, 2, 3, 4)).save(tmp_path / f"grey{v}_001_090.png")
    data = load_deeppicar_folder(tmp_path, frame_size=5)
    np.testing.assert_array_equal(data["frames"][0], np.full((5, 5, 3), 100, np.uint8))
    np.testing.assert_array_equal(data["frames"][1, 0, 0], [1, 2, 3])


@pytest.mark.parametrize(
    ("episodes", "sizes"),
    [(3, (1, 1, 1)), (4, (2, 1, 1)), (10, (7, 1, 2)), (20, (15, 2, 3)), (40, (30, 4, 6))],
)
def test_split_sizes_are_75_10_15_with_at_least_one_each(episodes, sizes):
    assert split_sizes(episodes) == sizes
    codes = episode_splits(episodes, seed=11)
    assert tuple(np.bincount(codes, minlength=3)) == sizes
    np.testing.assert_array_equal(codes, episode_splits(episodes, seed=11))


def test_fewer_than_three_episodes_cannot_be_split():
    with pytest.raises(ValueError, match="at least 3 episodes"):
        split_sizes(2)
