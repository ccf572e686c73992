"""Train/valid/test splits: by episode (the driving data sets), a fixed held-out subset
(`hold_out`), and padded evaluation chunks (`padded_chunks`).

Consecutive frames of one drive are nearly identical, so a split by frame would
put near-copies of the test frames into the training set. Here whole episodes
(drives, videos) go to one split: 75% train, 10% valid, 15% test, chosen by a
permutation of the episodes drawn from a seed. Every split gets at least one
episode, so at least three episodes are needed.
"""

from __future__ import annotations

import numpy as np

SPLIT_NAMES = ("train", "valid", "test")
"""The split codes of the `split` arrays: 0 train, 1 valid, 2 test."""

SPLIT_FRACTIONS = (0.75, 0.10, 0.15)


def split_sizes(num_episodes: int) -> tuple[int, int, int]:
    """How many episodes go to (train, valid, test): 75/10/15, each at least 1.

    Valid and test are rounded half up, then raised to 1 where they would be 0;
    train takes the rest. Fewer than 3 episodes raise `ValueError`.
    """
    num_episodes = int(num_episodes)
    if num_episodes < 3:
        raise ValueError(
            f"a split by episode into train/valid/test needs at least 3 episodes, "
            f"got {num_episodes}"
        )
    num_valid = max(1, int(np.floor(SPLIT_FRACTIONS[1] * num_episodes + 0.5)))
    num_test = max(1, int(np.floor(SPLIT_FRACTIONS[2] * num_episodes + 0.5)))
    return num_episodes - num_valid - num_test, num_valid, num_test


def episode_splits(num_episodes: int, seed: int) -> np.ndarray:
    """The split code (0 train, 1 valid, 2 test) of each episode, `(num_episodes,) int8`.

    Deterministic in `(num_episodes, seed)`: the episodes are permuted by a
    generator seeded with `seed`, then the first 75% of the permutation go to
    train, the next 10% to valid and the rest to test (see `split_sizes`).
    """
    num_train, num_valid, _ = split_sizes(num_episodes)
    order = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5917])).permutation(
        num_episodes
    )
    codes = np.full(num_episodes, 2, dtype=np.int8)
    codes[order[:num_train]] = 0
    codes[order[num_train : num_train + num_valid]] = 1
    return codes


def split_by_episode(episode: np.ndarray, num_episodes: int, seed: int) -> np.ndarray:
    """The split code of each frame, `(N,) int8`, from its episode index in `[0, num_episodes)`."""
    episode = np.asarray(episode)
    if episode.size and (episode.min() < 0 or episode.max() >= num_episodes):
        raise ValueError(
            f"episode indices must lie in [0, {num_episodes}), got {episode.min()}..{episode.max()}"
        )
    return episode_splits(num_episodes, seed)[episode]


def split_indices(data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The frame indices of each split of a loaded data set: split name -> (n,) indices."""
    split = np.asarray(data["split"])
    return {name: np.flatnonzero(split == code) for code, name in enumerate(SPLIT_NAMES)}


def hold_out(num: int, num_held_out: int, seed: int, what: str = "items"):
    """`(kept, held_out)`: sorted int32 indices of `range(num)`, `num_held_out` of them
    drawn without replacement by a generator seeded with `seed`, the rest kept."""
    if not 0 < num_held_out < num:
        raise ValueError(f"cannot hold out {num_held_out} of {num} {what}")
    held = np.random.default_rng(seed).choice(num, num_held_out, replace=False)
    is_held = np.zeros(num, bool)
    is_held[held] = True
    return np.flatnonzero(~is_held).astype(np.int32), np.flatnonzero(is_held).astype(np.int32)


def padded_chunks(indices: np.ndarray, chunk: int) -> np.ndarray:
    """`indices` padded with −1 to a multiple of `chunk`, as (num_chunks, chunk) int32."""
    num_chunks = -(-len(indices) // chunk)
    padded = np.full(num_chunks * chunk, -1, np.int32)
    padded[: len(indices)] = indices
    return padded.reshape(num_chunks, chunk)
