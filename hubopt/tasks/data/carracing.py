"""A lane-keeping data set made offline in Gymnasium's CarRacing-v3 simulator.

The HUB paper's lane-keeping task predicts a car's steering angle from its
camera frame. This module makes such data without a car: a scripted
pure-pursuit driver steers CarRacing-v3's car along randomly generated tracks,
and each recorded frame is paired with the driver's steering command.

Driving. Each episode resets the environment with its own seed (a new track),
then steps it with `[steer, gas, brake]`. The *expert* steering is pure
pursuit on the track's centre line (`env.unwrapped.track`): aim at the centre
line point `max(lookahead, lookahead_time · speed)` units (along the line)
past the car's nearest one, and steer `clip(steering_gain · angle to it, -1,
1)` (CarRacing's sign: negative turns left; the wheels turn at most 0.4 rad).
A larger gain or shorter look-ahead makes the car weave in a limit cycle at
speed. Gas and brake hold a target speed drawn per episode. So that the data
covers recoveries, not just a car glued to the centre line, the steering that
is *applied* is the expert's plus a seeded drift: smooth raised-cosine pulses
of random sign, size and length at random times, which push the car off the
centre (sometimes partly onto the grass) before the expert brings it back.

Labels. `steering` is the expert's command at the recorded frame, i.e. the
correction a good driver would make from what the frame shows; the drift is
not part of it (it cannot be seen in one frame). Values lie in [-1, 1]; the
command is the front wheels' target angle in radians, and as they stop at
±0.4 rad, commands beyond ±0.4 all mean full lock.

Frames. CarRacing's 96×96 observation has a dashboard in its bottom 12 rows
that draws the steering and gyro indicators, which would leak the label; only
the top 84 rows are kept, then area-averaged down to `frame_size`. The first
`warmup_steps` frames of each episode (while the camera zooms in) are not
recorded; after them a frame is recorded every `record_every` steps.

Episodes end after `steps_per_episode` recorded frames, or earlier if the
environment terminates (the car completes a lap, or leaves the playfield):
such an episode is kept, shorter. A car on the grass is not stopped; it is
recorded while the expert steers it back. Everything is deterministic in the
recipe: episode `k` uses a track and a drift drawn from `(seed, k)`, and the
episodes are split 75/10/15 into train/valid/test by episode (see
`hubopt.tasks.data.splits`). Generated data is cached (kind "carracing").

    recipe = carracing_recipe(num_episodes=20, steps_per_episode=300, frame_size=32, seed=0)
    data = load_carracing(recipe)   # frames, steering, episode, split
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from hubopt.tasks.data import cache
from hubopt.tasks.data.splits import split_by_episode, split_sizes

__all__ = [
    "DASHBOARD_ROWS",
    "EpisodeRecord",
    "carracing_recipe",
    "crop_dashboard",
    "drive_episodes",
    "generate_carracing",
    "load_carracing",
    "parse_frame_size",
    "resize_area",
]

RECIPE_FORMAT = 2
"""The version of the generation code; bump it when the data it makes changes."""

ENV_ID = "CarRacing-v3"
OBSERVATION_ROWS = 96
DASHBOARD_ROWS = 12
"""Bottom rows of a CarRacing observation that hold the dashboard (speed, steering, gyro)."""

INSTALL_HINT = "pip install 'hubopt[tasks]'"


def carracing_recipe(
    num_episodes: int = 20,
    steps_per_episode: int = 300,
    frame_size: int | Sequence[int] = 32,
    seed: int = 0,
    *,
    warmup_steps: int = 50,
    record_every: int = 1,
    lookahead: float = 15.0,
    lookahead_time: float = 0.5,
    steering_gain: float = 1.5,
    target_speed: tuple[float, float] = (30.0, 45.0),
    drift_amplitude: tuple[float, float] = (0.3, 0.8),
    drift_steps: tuple[int, int] = (20, 60),
    drift_mean_gap: float = 60.0,
    domain_randomize: bool = False,
) -> dict[str, Any]:
    """The recipe (a JSON-able dict) of a CarRacing lane-keeping data set.

    `steps_per_episode` counts recorded frames; `frame_size` is `n` or
    `(height, width)`, at most 84×96. The speed (units/s, drawn per episode
    from `target_speed`), drift amplitude (added steering), drift length and
    mean gap (env steps, 50 a second) are ranges sampled from the seed.
    `domain_randomize` is CarRacing's option that recolours each track.
    """
    height, width = _frame_shape(frame_size)
    split_sizes(num_episodes)  # at least 3 episodes, else ValueError
    positive = {
        "steps_per_episode": steps_per_episode,
        "record_every": record_every,
    }
    for name, value in positive.items():
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not (lookahead > 0 and lookahead_time >= 0 and steering_gain > 0):
        raise ValueError(
            "lookahead and steering_gain must be positive and lookahead_time non-negative, got "
            f"{lookahead!r}, {steering_gain!r}, {lookahead_time!r}"
        )
    if int(warmup_steps) != warmup_steps or warmup_steps < 0:
        raise ValueError(f"warmup_steps must be a non-negative integer, got {warmup_steps!r}")
    ranges = {
        "target_speed": target_speed,
        "drift_amplitude": drift_amplitude,
        "drift_steps": drift_steps,
    }
    for name, (low, high) in ranges.items():
        if not 0 <= low <= high:
            raise ValueError(f"{name} must be a range 0 <= low <= high, got {(low, high)}")
    if drift_steps[0] < 1 or drift_mean_gap <= 0:
        raise ValueError("drift_steps must be at least 1 and drift_mean_gap positive")
    return {
        "format": RECIPE_FORMAT,
        "env_id": ENV_ID,
        "num_episodes": int(num_episodes),
        "steps_per_episode": int(steps_per_episode),
        "frame_size": [height, width],
        "seed": int(seed),
        "warmup_steps": int(warmup_steps),
        "record_every": int(record_every),
        "domain_randomize": bool(domain_randomize),
        "controller": {
            "lookahead": float(lookahead),
            "lookahead_time": float(lookahead_time),
            "steering_gain": float(steering_gain),
            "target_speed": [float(v) for v in target_speed],
        },
        "drift": {
            "amplitude": [float(v) for v in drift_amplitude],
            "steps": [int(v) for v in drift_steps],
            "mean_gap": float(drift_mean_gap),
        },
    }


def load_carracing(recipe: dict[str, Any], *, use_cache: bool = True) -> dict[str, np.ndarray]:
    """The data set of `recipe`, from the cache or generated (and then cached).

    Returns `frames (N, H, W, 3) uint8`, `steering (N,) float32` in [-1, 1],
    `episode (N,) int32` and `split (N,) int8` (0 train, 1 valid, 2 test, by
    episode); frames are in driving order within each episode. The cache key
    adds the versions of gymnasium, Box2D and pygame to the recipe, since
    they shape the frames.
    """
    versions = _simulator_versions()
    if not use_cache:
        return generate_carracing(recipe)
    key = {"recipe": recipe, "simulator": versions}
    return cache.cached_arrays("carracing", key, lambda: generate_carracing(recipe))


def generate_carracing(recipe: dict[str, Any]) -> dict[str, np.ndarray]:
    """Drives every episode of `recipe` and returns its arrays (no cache)."""
    height, width = recipe["frame_size"]
    frames, steering, episode = [], [], []
    for record in drive_episodes(recipe):
        frames.append(record.frames)
        steering.append(record.steering)
        episode.append(np.full(len(record.steering), record.index, dtype=np.int32))
    episode_array = np.concatenate(episode)
    return {
        "frames": np.concatenate(frames).reshape(-1, height, width, 3),
        "steering": np.concatenate(steering),
        "episode": episode_array,
        "split": split_by_episode(episode_array, recipe["num_episodes"], recipe["seed"]),
    }


@dataclasses.dataclass(frozen=True)
class EpisodeRecord:
    """One driven episode: the recorded frames and labels, plus how the drive went."""

    index: int
    track_seed: int
    frames: np.ndarray  # (n, H, W, 3) uint8
    steering: np.ndarray  # (n,) float32: the expert's command, the label
    applied_steering: np.ndarray  # (n,) float32: expert plus drift, what drove the car
    centre_offset: np.ndarray  # (n,) float32: signed distance from the centre line, + right
    wheels_on_road: np.ndarray  # (n,) int8: wheels (of 4) touching a road tile
    tiles_visited: int
    track_tiles: int
    terminated_early: bool


def drive_episodes(recipe: dict[str, Any]) -> Iterator[EpisodeRecord]:
    """Drives the episodes of `recipe` one by one (deterministic in the recipe)."""
    gymnasium = _import_simulator()
    if recipe.get("format") != RECIPE_FORMAT or recipe.get("env_id") != ENV_ID:
        raise ValueError(
            f"not a format-{RECIPE_FORMAT} {ENV_ID} recipe; make one with carracing_recipe()"
        )
    max_steps = recipe["warmup_steps"] + recipe["steps_per_episode"] * recipe["record_every"]
    try:
        env = gymnasium.make(
            ENV_ID,
            max_episode_steps=max_steps + 1,
            domain_randomize=recipe["domain_randomize"],
            disable_env_checker=True,
        )
    except gymnasium.error.DependencyNotInstalled as error:
        raise ImportError(f"{error}; install with: {INSTALL_HINT}") from error
    try:
        for index in range(recipe["num_episodes"]):
            yield _drive_episode(env, recipe, index, max_steps)
    finally:
        env.close()


def crop_dashboard(observation: np.ndarray) -> np.ndarray:
    """A CarRacing observation without its bottom dashboard rows (the top 84 of 96)."""
    if observation.shape[0] != OBSERVATION_ROWS:
        raise ValueError(f"expected a {OBSERVATION_ROWS}-row observation, got {observation.shape}")
    return observation[: OBSERVATION_ROWS - DASHBOARD_ROWS]


def resize_area(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`image (h, w, c) uint8` resized to `size = (height, width)` by area averaging.

    Each output pixel is the mean of the input area it covers (fractional
    overlaps weighted by their share), rounded half up: exact and
    deterministic for any ratio. (Enlarging repeats pixels, blending at edges.)
    """
    height, width = (int(v) for v in size)
    if image.ndim != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (h, w, c) uint8 image, got {image.shape} {image.dtype}")
    if height < 1 or width < 1:
        raise ValueError(f"cannot resize to {size!r}")
    rows = _area_weights(image.shape[0], height)
    cols = _area_weights(image.shape[1], width)
    # two small matrix products (rows, then columns): exact area means, fast
    averaged = np.einsum(
        "jw,iwc->ijc", cols, np.einsum("ih,hwc->iwc", rows, image.astype(np.float64))
    )
    return np.floor(averaged + 0.5).clip(0, 255).astype(np.uint8)


def _area_weights(source: int, target: int) -> np.ndarray:
    """`(target, source)` weights: row i averages source cells over [i, i+1)·source/target."""
    edges = np.arange(target + 1) * (source / target)
    cells = np.arange(source)
    overlap = np.minimum(edges[1:, None], cells[None, :] + 1) - np.maximum(
        edges[:-1, None], cells[None, :]
    )
    return np.clip(overlap, 0.0, None) / (source / target)


def _drive_episode(env: Any, recipe: dict[str, Any], index: int, max_steps: int) -> EpisodeRecord:
    """Resets `env` to episode `index`'s track and drives it, recording frames and labels."""
    frame_size = tuple(recipe["frame_size"])
    controller = recipe["controller"]
    episode_seeds = np.random.SeedSequence([recipe["seed"], index])
    track_seed = int(episode_seeds.generate_state(1)[0])
    rng = np.random.default_rng(episode_seeds)
    target_speed = rng.uniform(*controller["target_speed"])
    drift = _drift_schedule(rng, max_steps, recipe["drift"])

    observation, _ = env.reset(seed=track_seed)
    car_racing = env.unwrapped
    pilot = _PurePursuit(
        np.asarray(car_racing.track, dtype=np.float64),
        controller["lookahead"],
        controller["lookahead_time"],
        controller["steering_gain"],
    )
    frames, steering, applied, offsets, on_road = [], [], [], [], []
    terminated_early = False
    for step in range(max_steps):
        hull = car_racing.car.hull
        speed = math.hypot(*hull.linearVelocity)
        expert, offset = pilot.steering(hull.position, hull.angle, speed)
        command = float(np.clip(expert + drift[step], -1.0, 1.0))
        since_warmup = step - recipe["warmup_steps"]
        if since_warmup >= 0 and since_warmup % recipe["record_every"] == 0:
            frames.append(resize_area(crop_dashboard(observation), frame_size))
            steering.append(expert)
            applied.append(command)
            offsets.append(offset)
            on_road.append(sum(bool(wheel.tiles) for wheel in car_racing.car.wheels))
            if len(steering) == recipe["steps_per_episode"]:
                break
        gas = float(np.clip(0.05 * (target_speed - speed), 0.0, 0.3))
        brake = 0.3 if speed > target_speed + 8.0 else 0.0
        observation, _, terminated, truncated, _ = env.step(
            np.array([command, gas, brake], dtype=np.float32)
        )
        if terminated or truncated:
            terminated_early = len(steering) < recipe["steps_per_episode"]
            break
    height, width = frame_size
    return EpisodeRecord(
        index=index,
        track_seed=track_seed,
        frames=np.asarray(frames, dtype=np.uint8).reshape(-1, height, width, 3),
        steering=np.asarray(steering, dtype=np.float32),
        applied_steering=np.asarray(applied, dtype=np.float32),
        centre_offset=np.asarray(offsets, dtype=np.float32),
        wheels_on_road=np.asarray(on_road, dtype=np.int8),
        tiles_visited=int(car_racing.tile_visited_count),
        track_tiles=len(car_racing.track),
        terminated_early=terminated_early,
    )


class _PurePursuit:
    """Pure pursuit of the centre line, `max(lookahead, lookahead_time · speed)` units ahead."""

    def __init__(self, track: np.ndarray, lookahead: float, lookahead_time: float, gain: float):
        self.points = track[:, 2:4]  # track rows are (alpha, beta, x, y); a closed loop
        following = np.roll(self.points, -1, axis=0)
        self.segments = following - self.points  # segment k runs from point k to k + 1
        self.lengths = np.hypot(self.segments[:, 0], self.segments[:, 1])
        self.starts = np.concatenate([[0.0], np.cumsum(self.lengths)[:-1]])  # arc length
        self.loop_length = float(self.lengths.sum())
        self.lookahead = lookahead
        self.lookahead_time = lookahead_time
        self.gain = gain
        self.segment = 0  # the car starts at point 0

    def locate(self, x: float, y: float) -> tuple[float, float]:
        """`(arc length, signed offset)` of the car's nearest centre-line point; + is right."""
        # Search near the last segment, so that a stretch of track passing close by is not
        # mistaken for the one the car is on.
        window = (self.segment + np.arange(-6, 20)) % len(self.points)
        offset = np.stack([x - self.points[window, 0], y - self.points[window, 1]], axis=1)
        direction = self.segments[window]
        along = np.clip(np.sum(offset * direction, axis=1) / self.lengths[window] ** 2, 0.0, 1.0)
        gap = offset - along[:, None] * direction
        best = int(np.argmin(np.hypot(gap[:, 0], gap[:, 1])))
        self.segment = int(window[best])
        dx, dy = direction[best] / self.lengths[self.segment]
        side = dy * offset[best, 0] - dx * offset[best, 1]  # cross product: + is right of travel
        return self.starts[self.segment] + along[best] * self.lengths[self.segment], float(side)

    def point_at(self, arc: float) -> np.ndarray:
        """The centre-line point at arc length `arc` (modulo one lap)."""
        arc %= self.loop_length
        segment = int(np.searchsorted(self.starts, arc, side="right") - 1)
        fraction = (arc - self.starts[segment]) / self.lengths[segment]
        return self.points[segment] + fraction * self.segments[segment]

    def steering(
        self, position: Sequence[float], angle: float, speed: float
    ) -> tuple[float, float]:
        """`(steering command in [-1, 1], negative: left; signed offset from the centre)`."""
        x, y = float(position[0]), float(position[1])
        arc, side = self.locate(x, y)
        distance = max(self.lookahead, self.lookahead_time * speed)
        target_x, target_y = self.point_at(arc + distance)
        dx, dy = target_x - x, target_y - y
        # The car faces its local +y axis; its local +x axis points to its right.
        ahead = -math.sin(angle) * dx + math.cos(angle) * dy
        right = math.cos(angle) * dx + math.sin(angle) * dy
        return float(np.clip(self.gain * math.atan2(right, ahead), -1.0, 1.0)), side


def _drift_schedule(rng: np.random.Generator, num_steps: int, drift: dict[str, Any]) -> np.ndarray:
    """Added steering per env step: raised-cosine pulses of random sign, size and length."""
    schedule = np.zeros(num_steps)
    low_steps, high_steps = drift["steps"]
    step = int(rng.exponential(drift["mean_gap"]))
    while step < num_steps:
        length = int(rng.integers(low_steps, high_steps + 1))
        amplitude = rng.uniform(*drift["amplitude"]) * rng.choice([-1.0, 1.0])
        pulse = amplitude * 0.5 * (1.0 - np.cos(2.0 * np.pi * np.arange(length) / length))
        end = min(step + length, num_steps)
        schedule[step:end] += pulse[: end - step]
        step += length + int(rng.exponential(drift["mean_gap"]))
    return schedule


def parse_frame_size(frame_size: int | Sequence[int]) -> tuple[int, int]:
    """`(height, width)` from `n` (square) or a `(height, width)` pair of positive ints."""
    if isinstance(frame_size, int | np.integer):
        shape = (int(frame_size), int(frame_size))
    else:
        shape = tuple(int(v) for v in frame_size)
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"frame_size must be n or (height, width), positive; got {frame_size!r}")
    return shape


def _frame_shape(frame_size: int | Sequence[int]) -> tuple[int, int]:
    """`(height, width)` from `n` or a pair, within the cropped 84×96 observation."""
    height, width = parse_frame_size(frame_size)
    max_height = OBSERVATION_ROWS - DASHBOARD_ROWS
    if not (1 <= height <= max_height and 1 <= width <= 96):
        raise ValueError(
            f"frame_size must fit the cropped {max_height}×96 observation, got {frame_size!r}"
        )
    return height, width


def _import_simulator() -> Any:
    """The `gymnasium` module, checking Box2D and pygame too; `ImportError` says what to install."""
    try:
        import Box2D  # noqa: F401
        import gymnasium
        import pygame  # noqa: F401
    except ImportError as error:
        raise ImportError(
            f"the CarRacing data set needs gymnasium with Box2D and pygame ({error}); "
            f"install them with: {INSTALL_HINT}"
        ) from error
    return gymnasium


def _simulator_versions() -> dict[str, str]:
    """The versions of the packages that render and simulate the frames."""
    _import_simulator()
    import Box2D
    import gymnasium
    import pygame

    return {
        "gymnasium": gymnasium.__version__,
        "Box2D": str(getattr(Box2D, "__version__", "unknown")),
        "pygame": pygame.version.ver,
    }
