"""The CarRacing lane-keeping data set: generation, determinism, cropping, splits, caching.

Each generation of the tiny recipe (3 episodes of 20 recorded frames) drives
the simulator for ~210 steps, about 3 s on one core.
"""

import sys

import numpy as np
import pytest

pytest.importorskip("gymnasium")
pytest.importorskip("Box2D")

from hubopt.tasks.data import cache, carracing  # noqa: E402
from hubopt.tasks.data.splits import SPLIT_NAMES, episode_splits, split_indices  # noqa: E402

FULL_SIZE = (84, 96)  # the cropped observation, not resized
TINY = carracing.carracing_recipe(
    num_episodes=3, steps_per_episode=20, frame_size=FULL_SIZE, seed=0
)


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("hubopt_cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(cache.CACHE_ENV_VAR, str(root))
        yield root


@pytest.fixture(scope="module")
def tiny_data(cache_root):
    return carracing.load_carracing(TINY)


def test_arrays_have_the_documented_shapes_and_dtypes(tiny_data):
    assert sorted(tiny_data) == ["episode", "frames", "split", "steering"]
    assert tiny_data["frames"].shape == (60, *FULL_SIZE, 3)
    assert tiny_data["frames"].dtype == np.uint8
    assert tiny_data["steering"].shape == (60,) and tiny_data["steering"].dtype == np.float32
    assert tiny_data["episode"].dtype == np.int32 and tiny_data["split"].dtype == np.int8
    np.testing.assert_array_equal(tiny_data["episode"], np.repeat([0, 1, 2], 20))


def test_labels_lie_in_range_and_vary(tiny_data):
    steering = tiny_data["steering"]
    assert np.all(np.abs(steering) <= 1.0)
    assert steering.std() > 0.05
    assert len(np.unique(steering)) > 30


def test_split_is_by_episode_disjoint_and_covering(tiny_data):
    split, episode = tiny_data["split"], tiny_data["episode"]
    for index in np.unique(episode):
        assert len(np.unique(split[episode == index])) == 1  # an episode is never divided
    np.testing.assert_array_equal(split, episode_splits(3, TINY["seed"])[episode])
    parts = split_indices(tiny_data)
    assert list(parts) == list(SPLIT_NAMES)
    assert all(len(part) == 20 for part in parts.values())  # 3 episodes: one each
    assert np.array_equal(np.sort(np.concatenate(list(parts.values()))), np.arange(60))


def test_generation_is_deterministic(tiny_data):
    again = carracing.load_carracing(TINY, use_cache=False)
    for name, array in tiny_data.items():
        assert again[name].dtype == array.dtype
        assert again[name].tobytes() == array.tobytes(), name


def test_the_dashboard_is_cropped_away(tiny_data):
    import gymnasium

    env = gymnasium.make("CarRacing-v3")
    observation, _ = env.reset(seed=1)
    for _ in range(60):
        observation, *_ = env.step(np.array([0.0, 0.1, 0.0], dtype=np.float32))
    env.close()
    black_rows = np.all(observation == 0, axis=(1, 2))
    assert black_rows[-carracing.DASHBOARD_ROWS :].any()  # the dashboard's black band
    assert not black_rows[: -carracing.DASHBOARD_ROWS].any()
    cropped = carracing.crop_dashboard(observation)
    assert cropped.shape == (96 - carracing.DASHBOARD_ROWS, 96, 3)
    np.testing.assert_array_equal(cropped, observation[:84])
    # No recorded frame holds a black dashboard row.
    assert not np.all(tiny_data["frames"] == 0, axis=(2, 3)).any()


def test_small_frames_are_area_averages_of_the_same_drive(tiny_data, cache_root):
    recipe = carracing.carracing_recipe(
        num_episodes=3, steps_per_episode=20, frame_size=(24, 32), seed=0
    )
    records = list(carracing.drive_episodes(recipe))
    frames = np.concatenate([record.frames for record in records])
    assert frames.shape == (60, 24, 32, 3)
    expected = np.stack([carracing.resize_area(f, (24, 32)) for f in tiny_data["frames"]])
    np.testing.assert_array_equal(frames, expected)
    steering = np.concatenate([record.steering for record in records])
    np.testing.assert_array_equal(steering, tiny_data["steering"])
    # The scripted driver keeps the car on the road.
    wheels = np.concatenate([record.wheels_on_road for record in records])
    assert np.mean(wheels == 4) > 0.9 and np.all(wheels >= 1)
    assert not any(record.terminated_early for record in records)


def test_resize_area_averages_blocks_exactly():
    image = np.random.default_rng(0).integers(0, 256, size=(84, 96, 3), dtype=np.uint8)
    blocks = image.reshape(42, 2, 48, 2, 3).astype(np.float64).mean(axis=(1, 3))
    np.testing.assert_array_equal(
        carracing.resize_area(image, (42, 48)), np.floor(blocks + 0.5).astype(np.uint8)
    )
    np.testing.assert_array_equal(carracing.resize_area(image, (84, 96)), image)
    flat = np.full((84, 96, 3), 77, dtype=np.uint8)
    np.testing.assert_array_equal(carracing.resize_area(flat, (32, 32)), flat[:32, :32])
    mean = carracing.resize_area(image, (1, 1))[0, 0]
    np.testing.assert_array_equal(mean, np.floor(image.mean(axis=(0, 1)) + 0.5))


def test_the_loader_reuses_its_cache_and_rebuilds_a_damaged_entry(
    tiny_data, cache_root, monkeypatch
):
    entries = sorted((cache_root / "carracing").glob("*.npz"))
    assert len(entries) == 1 and entries[0].with_suffix(".json").exists()

    calls = []

    def counting_generate(recipe):
        calls.append(recipe)
        return dict(tiny_data)

    monkeypatch.setattr(carracing, "generate_carracing", counting_generate)
    reused = carracing.load_carracing(TINY)
    assert calls == []
    np.testing.assert_array_equal(reused["frames"], tiny_data["frames"])

    entries[0].write_bytes(entries[0].read_bytes()[:1000])  # truncated
    with pytest.warns(cache.CacheRebuildWarning):
        rebuilt = carracing.load_carracing(TINY)
    assert calls == [TINY]
    np.testing.assert_array_equal(rebuilt["steering"], tiny_data["steering"])
    carracing.load_carracing(TINY)
    assert len(calls) == 1


def test_a_missing_simulator_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv(cache.CACHE_ENV_VAR, str(tmp_path))
    monkeypatch.setitem(sys.modules, "Box2D", None)  # `import Box2D` now fails
    with pytest.raises(ImportError, match=r"pip install 'hubopt\[tasks\]'"):
        carracing.load_carracing(TINY)
    with pytest.raises(ImportError, match="Box2D"):
        list(carracing.drive_episodes(TINY))


def test_recipes_are_checked():
    with pytest.raises(ValueError, match="at least 3 episodes"):
        carracing.carracing_recipe(num_episodes=2, steps_per_episode=5)
    with pytest.raises(ValueError, match="frame_size"):
        carracing.carracing_recipe(num_episodes=3, frame_size=(90, 90))
    with pytest.raises(ValueError, match="steps_per_episode"):
        carracing.carracing_recipe(num_episodes=3, steps_per_episode=0)
    recipe = carracing.carracing_recipe(num_episodes=4, frame_size=48, seed=5)
    assert recipe["frame_size"] == [48, 48] and recipe["seed"] == 5
    assert cache.recipe_hash(recipe) != cache.recipe_hash({**recipe, "seed": 6})
