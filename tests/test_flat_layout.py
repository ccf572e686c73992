"""FlatLayout: the blocked buffer round-trips every tensor, and its per-tensor sums,
means and broadcasts equal the same reductions done tensor by tensor; TensorLayout gives
the same interface for one tensor in its own shape."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hubopt._src.flat_layout import BLOCK, FlatLayout, TensorLayout

SHAPES = [(3, 5), (BLOCK,), (1,), (2, BLOCK + 1), (4, 3, 2)]


def _tensors(key, shapes, lead=()):
    keys = jax.random.split(key, len(shapes))
    return [
        jax.random.normal(k, (*lead, *s), jnp.float32) for k, s in zip(keys, shapes, strict=True)
    ]


def test_blocks_and_owners():
    layout = FlatLayout.of(SHAPES)
    # 15 → 1 block, 128 → 1, 1 → 1, 258 → 3, 24 → 1
    assert layout.offsets == (0, 1, 2, 3, 6)
    assert layout.num_blocks == 7
    np.testing.assert_array_equal(layout.block_owner, [0, 1, 2, 3, 3, 3, 4])
    np.testing.assert_array_equal(layout.sizes(), [15, 128, 1, 258, 24])


@pytest.mark.parametrize("lead", [(), (3,)])
def test_round_trip_and_zero_padding(lead):
    layout = FlatLayout.of(SHAPES)
    xs = _tensors(jax.random.key(0), SHAPES, lead)
    flat = layout.flatten(xs, lead=len(lead))
    assert flat.shape == (*lead, layout.num_blocks, BLOCK)
    for x, y in zip(xs, layout.unflatten(flat, lead=len(lead)), strict=True):
        np.testing.assert_array_equal(x, y)
    # everything outside the tensors is zero: the buffer's total is the tensors' total
    np.testing.assert_allclose(
        jnp.sum(flat), sum(float(jnp.sum(x)) for x in xs), rtol=1e-5, atol=1e-4
    )
    assert int(jnp.sum(flat != 0)) == sum(x.size for x in xs)


def test_sums_means_and_broadcast_match_tensor_by_tensor():
    layout = FlatLayout.of(SHAPES)
    xs = _tensors(jax.random.key(1), SHAPES, (2,))
    flat = layout.flatten(xs, lead=1)
    want_sum = np.stack([np.asarray(x).reshape(2, -1).sum(-1) for x in xs], axis=-1)
    want_mean = np.stack([np.asarray(x).reshape(2, -1).mean(-1) for x in xs], axis=-1)
    np.testing.assert_allclose(layout.tensor_sum(flat), want_sum, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(layout.tensor_mean(flat), want_mean, rtol=1e-5, atol=1e-6)
    per_entry = layout.per_entry(jnp.asarray(want_mean))
    assert per_entry.shape == (2, layout.num_blocks, 1)
    back = layout.unflatten(jnp.broadcast_to(per_entry, flat.shape), lead=1)
    for i, b in enumerate(back):
        np.testing.assert_array_equal(
            b, jnp.broadcast_to(want_mean[:, i].reshape(2, *[1] * (b.ndim - 1)), b.shape)
        )


def test_several_sums_at_once_and_the_padding_mask():
    layout = FlatLayout.of(SHAPES)
    xs, ys = _tensors(jax.random.key(2), SHAPES), _tensors(jax.random.key(3), SHAPES)
    sums = layout.tensor_sums([layout.flatten(xs), layout.flatten(ys)])
    assert sums.shape == (2, len(SHAPES))
    for row, ts in zip(sums, (xs, ys), strict=True):
        np.testing.assert_allclose(row, [float(jnp.sum(t)) for t in ts], rtol=1e-5, atol=1e-5)
    valid = layout.valid()
    assert valid.shape == (layout.num_blocks, BLOCK) and valid.dtype == jnp.bool_
    ones = layout.flatten([jnp.ones(s) for s in SHAPES])  # ones exactly at the entries
    np.testing.assert_array_equal(valid, ones == 1)


def test_reductions_are_differentiable():
    layout = FlatLayout.of(SHAPES)
    xs = _tensors(jax.random.key(2), SHAPES)

    def loss(ts):
        return jnp.sum(layout.tensor_mean(jnp.square(layout.flatten(ts))) * jnp.arange(5.0))

    grads = jax.grad(loss)(xs)
    for i, (x, g) in enumerate(zip(xs, grads, strict=True)):
        np.testing.assert_allclose(g, 2.0 * i * x / x.size, rtol=1e-5, atol=1e-7)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="size > 0"):
        FlatLayout.of([(3,), (0, 2)])
    layout = FlatLayout.of([(3,), (2, 2)])
    with pytest.raises(ValueError, match="shape"):
        layout.flatten([jnp.zeros(3), jnp.zeros((4,))])


@pytest.mark.parametrize("shape", [(3, 5), (7,), (), (4, 3, 2)])
def test_a_tensor_layout_is_the_tensor_itself_with_its_mean_per_lead_row(shape):
    x = jax.random.normal(jax.random.key(1), (2, *shape), jnp.float32)
    layout = TensorLayout(shape)
    assert layout.num_tensors == 1 and layout.entry_ndim == len(shape)
    flat = layout.flatten([x], lead=1)
    np.testing.assert_array_equal(flat, x)
    (back,) = layout.unflatten(flat, lead=1)
    np.testing.assert_array_equal(back, x)
    want = np.asarray(x).reshape(2, -1).mean(axis=1)
    mean = layout.tensor_mean(flat)
    assert mean.shape == (2, 1)
    np.testing.assert_allclose(mean[:, 0], want, rtol=1e-6)
    spread = layout.per_entry(mean)
    assert spread.shape == (2, *(1,) * len(shape))
    every_entry = np.broadcast_to(want.reshape(2, *(1,) * len(shape)), x.shape)
    np.testing.assert_allclose(jnp.broadcast_to(spread, x.shape), every_entry, rtol=1e-6)
    with pytest.raises(ValueError, match="TensorLayout.flatten"):
        layout.flatten([jnp.zeros((2, 9))], lead=1)
