"""The SIREN: its layer count, parameter count and Sitzmann et al.'s initialisation."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hubopt.tasks.models import siren as siren_model
from hubopt.tasks.models.siren import num_params, siren, width_for_params


def _count(params):
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(params))


@pytest.mark.parametrize("width", [1, 7, 32])
def test_parameter_count_is_the_formula(width):
    init, _ = siren(width)
    params = init(jax.random.key(0), jnp.zeros((1, 3)))
    assert _count(params) == num_params(width) == 5 * width**2 + 10 * width + 1
    # 7 weight layers: six sine layers and the linear output
    assert sorted(params) == sorted([*(f"sine_{i}" for i in range(6)), "out"])


def test_width_for_params_is_the_nearest():
    for target in [16, 100, 976, 1024, 4096, 65536]:
        w = width_for_params(target)
        best = min(range(1, 200), key=lambda v: (abs(num_params(v) - target), v))
        assert w == best
    with pytest.raises(ValueError, match="positive"):
        width_for_params(0)
    with pytest.raises(ValueError, match="width"):
        siren(0)


def test_initialisation_bounds_and_variance():
    width = 512
    init, _ = siren(width)
    params = init(jax.random.key(1), jnp.zeros((1, 3)))
    first = np.asarray(params["sine_0"]["kernel"])
    assert np.abs(first).max() <= 1 / 3  # U(−1/n, 1/n), n = 3
    assert first.std() == pytest.approx((1 / 3) / math.sqrt(3), rel=0.05)
    for name in ["sine_1", "sine_5", "out"]:
        kernel = np.asarray(params[name]["kernel"])
        bound = math.sqrt(6 / width) / 20.0
        assert np.abs(kernel).max() <= bound
        # a uniform U(−a, a) has standard deviation a/√3
        assert kernel.std() == pytest.approx(bound / math.sqrt(3), rel=0.05)
        bias = np.asarray(params[name]["bias"])
        assert np.abs(bias).max() <= 1 / math.sqrt(width)


def test_sine_activations_keep_their_spread_through_depth():
    """The point of the initialisation: ω₀·W h has unit variance, so every sine layer's
    output stays arcsine-like (variance ≈ ½) however deep the net."""
    width = 256
    model = siren_model.Siren(width=width, num_layers=7)
    params = model.init(jax.random.key(2), jnp.zeros((1, 3)))["params"]
    x = jax.random.uniform(jax.random.key(3), (4096, 3), minval=-1.0, maxval=1.0)
    h = x
    variances = []
    for i in range(6):
        layer = params[f"sine_{i}"]
        h = jnp.sin(20.0 * (h @ layer["kernel"] + layer["bias"][None]))
        variances.append(float(jnp.var(h)))
    for v in variances[1:]:
        assert 0.4 < v < 0.6, variances
    # and the flax module computes exactly this
    np.testing.assert_allclose(
        model.apply({"params": params}, x),
        h @ params["out"]["kernel"] + params["out"]["bias"][None],
        rtol=1e-5,
        atol=1e-5,
    )
