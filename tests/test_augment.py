"""Image augmentation against hand-computed expectations: crop, flip, CutMix."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hubopt.tasks.data import augment

IMAGE = np.arange(16, dtype=np.uint8).reshape(4, 4, 1) + 1  # pixel (r, c) = 4r + c + 1


def test_shift_of_a_known_image():
    shift = jax.jit(augment.shift, static_argnums=2)
    # offset (pad, pad) is the identity
    np.testing.assert_array_equal(shift(IMAGE, jnp.array([1, 1]), 1), IMAGE)
    # offset (0, 0): the image moves down-right by one, zeros come in at the top and left
    expected = np.zeros((4, 4, 1), np.uint8)
    expected[1:, 1:] = IMAGE[:3, :3]
    np.testing.assert_array_equal(shift(IMAGE, jnp.array([0, 0]), 1), expected)
    # offset (2·pad, 0) with pad 2: up by two, right by two
    expected = np.zeros((4, 4, 1), np.uint8)
    expected[:2, 2:] = IMAGE[2:, :2]
    np.testing.assert_array_equal(shift(IMAGE, jnp.array([4, 0]), 2), expected)


def test_random_crop_draws_every_shift_in_range():
    pad = 1
    x = np.broadcast_to(IMAGE, (400, 4, 4, 1))
    out = np.asarray(jax.jit(augment.random_crop, static_argnums=2)(jax.random.key(0), x, pad))
    padded = np.pad(IMAGE, ((pad, pad), (pad, pad), (0, 0)))
    candidates = {  # by hand: the 4×4 windows of the zero-padded image
        (dy, dx): padded[dy : dy + 4, dx : dx + 4]
        for dy in range(2 * pad + 1)
        for dx in range(2 * pad + 1)
    }
    seen = []
    for img in out:
        match = [o for o, c in candidates.items() if np.array_equal(img, c)]
        assert len(match) == 1  # each output is exactly one of the 9 shifts
        seen.append(match[0])
    counts = np.asarray([seen.count(o) for o in candidates])
    assert counts.min() > 20, counts  # all 9 drawn, about 44 times each
    np.testing.assert_array_equal(augment.random_crop(jax.random.key(1), x, 0), x)
    with pytest.raises(ValueError, match="pad"):
        augment.random_crop(jax.random.key(1), x, -1)


def test_random_flip_mirrors_about_half_the_images():
    x = np.broadcast_to(IMAGE, (1000, 4, 4, 1))
    out = np.asarray(jax.jit(augment.random_flip)(jax.random.key(3), x))
    mirrored = IMAGE[:, ::-1, :]
    np.testing.assert_array_equal(mirrored[0, :, 0], [4, 3, 2, 1])
    is_same = np.all(out == IMAGE, axis=(1, 2, 3))
    is_mirrored = np.all(out == mirrored, axis=(1, 2, 3))
    assert np.all(is_same ^ is_mirrored)
    assert 430 < is_mirrored.sum() < 570  # Binomial(1000, 1/2): 5 standard deviations


def test_paste_boxes_of_known_boxes():
    x = np.zeros((2, 4, 4, 1), np.float32)
    partner = np.ones((2, 4, 4, 1), np.float32)
    boxes = jnp.array([[1, 3, 0, 2], [0, 4, 3, 4]])  # (top, bottom, left, right), half-open
    paste = jax.jit(augment.paste_boxes)
    mixed, area = paste(x, partner, boxes)
    expected = np.zeros((2, 4, 4), np.float32)
    expected[0, 1:3, 0:2] = 1.0
    expected[1, :, 3] = 1.0
    np.testing.assert_array_equal(mixed[..., 0], expected)
    np.testing.assert_allclose(area, [4 / 16, 4 / 16])
    _, empty = paste(x, partner, jnp.zeros((2, 4), jnp.int32))
    np.testing.assert_array_equal(empty, [0.0, 0.0])


def test_cutmix_label_weights_equal_the_pasted_area():
    # image i is the constant i, labelled i: a pixel's value names the image it came from
    n, side = 64, 8
    x = np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None, None], (n, side, side, 1))
    targets = np.eye(n, dtype=np.float32)
    mixed, mixed_t = jax.jit(augment.cutmix)(jax.random.key(5), x, targets)
    mixed, mixed_t = np.asarray(mixed), np.asarray(mixed_t)
    np.testing.assert_allclose(mixed_t.sum(axis=1), 1.0, rtol=1e-6)
    for i in range(n):
        fractions = np.bincount(mixed[i].astype(int).ravel(), minlength=n) / side**2
        np.testing.assert_allclose(mixed_t[i], fractions, atol=1e-6)
    pasted = 1.0 - mixed_t[np.arange(n), np.arange(n)]
    assert pasted.max() > 0.2 and np.mean(pasted > 0) > 0.5  # boxes of every size are drawn
    # each pasted region is one rectangle of one partner image
    for i in np.flatnonzero(pasted > 0):
        rows, cols = np.nonzero(mixed[i, :, :, 0] != i)
        box = mixed[i, rows.min() : rows.max() + 1, cols.min() : cols.max() + 1, 0]
        assert len(np.unique(box)) == 1 and box.size == len(rows)


def test_cutmix_probability_and_boxes():
    x = np.random.default_rng(0).normal(size=(32, 8, 8, 3)).astype(np.float32)
    t = np.eye(10, dtype=np.float32)[np.arange(32) % 10]
    cutmix = jax.jit(augment.cutmix, static_argnames=("alpha", "prob"))
    same_x, same_t = cutmix(jax.random.key(1), x, t, prob=0.0)
    np.testing.assert_array_equal(same_x, x)
    np.testing.assert_array_equal(same_t, t)
    boxes_fn = jax.jit(augment.cutmix_boxes, static_argnums=(1, 2, 3))
    boxes = np.asarray(boxes_fn(jax.random.key(2), 2000, 8, 6))
    top, bottom, left, right = boxes.T
    assert np.all((0 <= top) & (top <= bottom) & (bottom <= 8))
    assert np.all((0 <= left) & (left <= right) & (right <= 6))
    # sides ⌊8·√(1−λ)⌋ and ⌊6·√(1−λ)⌋ before clipping, λ ~ U(0, 1): a full box is rare
    assert np.all(bottom - top <= 8) and np.mean((bottom - top) * (right - left) == 48) < 0.01
    with pytest.raises(ValueError, match="prob"):
        augment.cutmix(jax.random.key(1), x, t, prob=1.5)
