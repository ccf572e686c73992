"""The lane-keeping CNN: its im2col convolutions equal XLA's convolution."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hubopt.tasks.models import conv


@pytest.mark.parametrize("shape", [(2, 32, 32, 3), (3, 17, 23, 5), (1, 4, 4, 2)])
@pytest.mark.parametrize("kernel, stride", [(5, 2), (3, 2), (3, 1), (5, 1), (1, 1)])
def test_patches_times_kernel_equals_lax_same_convolution(shape, kernel, stride):
    kx, kw = jax.random.split(jax.random.key(0))
    x = jax.random.normal(kx, shape, jnp.float32)
    w_HWIO = jax.random.normal(kw, (kernel, kernel, shape[-1], 7), jnp.float32)
    expected = jax.lax.conv_general_dilated(
        x, w_HWIO, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    got = conv.patches(x, kernel, stride) @ w_HWIO.reshape(-1, 7)
    assert got.shape == expected.shape
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), atol=2e-4, rtol=1e-4)


def test_frame_features_shapes_and_channel_check():
    model = conv.FrameFeatures(channels=(4, 6, 8, 10), features=5)
    frames = jnp.zeros((3, 32, 32, 3))
    params = model.init(jax.random.key(0), frames)["params"]
    # conv i is a (k·k·C_in, C_out) kernel: 5·5·3 = 75 inputs for the first
    assert params["conv0"]["kernel"].shape == (75, 4)
    assert params["conv3"]["kernel"].shape == (3 * 3 * 8, 10)
    # 32 -> 16 -> 8 -> 4 -> 4 (strides 2, 2, 2, 1): 4·4·10 flattened features
    assert params["dense"]["kernel"].shape == (160, 5)
    assert model.apply({"params": params}, frames).shape == (3, 5)
    with pytest.raises(ValueError, match="channels needs 4 entries"):
        conv.FrameFeatures(channels=(4, 6)).init(jax.random.key(0), frames)
