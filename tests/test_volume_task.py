"""The SIREN compression task and its volumes: loading, preparing, splitting, PSNR."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hubopt.tasks import get_task
from hubopt.tasks import volume as volume_task_module
from hubopt.tasks.data import volumes
from hubopt.tasks.data.cache import cache_root
from hubopt.tasks.volume import held_out_split, psnr, siren_task, volume_task, voxel_coordinates

# ---------------------------------------------------------------- PSNR and coordinates


def test_psnr_is_the_standard_definition():
    assert float(psnr(jnp.float32(0.01))) == pytest.approx(20.0, rel=1e-6)
    assert float(psnr(jnp.float32(1e-4))) == pytest.approx(40.0, rel=1e-6)
    # with another data range: 10·log10(MAX²/mse)
    assert float(psnr(jnp.float32(4.0), data_range=20.0)) == pytest.approx(20.0, rel=1e-6)


def test_voxel_coordinates_span_the_cube_in_c_order():
    shape = (3, 4, 5)
    ids = jnp.arange(60)
    xyz = np.asarray(voxel_coordinates(ids, shape))
    grid = np.stack(
        np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij"), axis=-1
    ).reshape(-1, 3)
    np.testing.assert_allclose(xyz, grid, atol=1e-6)


def test_held_out_split_is_disjoint_complete_and_fixed():
    train, valid = held_out_split(4096)
    assert len(valid) == 64 and len(np.intersect1d(train, valid)) == 0
    assert np.array_equal(np.sort(np.concatenate([train, valid])), np.arange(4096))
    train2, valid2 = held_out_split(4096)
    assert np.array_equal(valid, valid2)
    with pytest.raises(ValueError, match="hold out"):
        held_out_split(1, fraction=1.0)


# ---------------------------------------------------------------- the task's metrics


def _ramp_volume(shape=(6, 5, 4)):
    v = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    return v / v.max()


def test_metrics_equal_the_mse_of_the_whole_decompressed_volume():
    """Two paths to the same number: the task's chunked metrics, and decompressing every
    voxel at once and comparing with the volume by hand."""
    volume = _ramp_volume()
    spec = volume_task_module.SIZES["tiny"]._replace(compression=2, eval_chunk=7)
    task = siren_task(volume, name="ramp_siren", size="tiny", description="a ramp", spec=spec)
    params = task.init(jax.random.key(0))
    from hubopt.tasks.models.siren import siren, width_for_params

    _, apply = siren(width_for_params(volume.size / 2))
    coords = voxel_coordinates(jnp.arange(volume.size), volume.shape)
    decompressed = np.asarray(apply(params, coords))[:, 0].reshape(volume.shape)
    mse = float(np.mean((decompressed - volume) ** 2))
    test = task.evaluate(params)
    assert test["mse"] == pytest.approx(mse, rel=1e-5)
    assert test["psnr"] == pytest.approx(-10 * np.log10(mse), rel=1e-5)
    # the valid split is the held-out voxels only
    _, valid_ids = held_out_split(volume.size)
    err = (decompressed.reshape(-1) - volume.reshape(-1)) ** 2
    assert task.evaluate(params, "valid")["mse"] == pytest.approx(err[valid_ids].mean(), rel=1e-5)


def test_batches_draw_training_voxels_only():
    volume = _ramp_volume((8, 8, 8))
    task = siren_task(volume, name="ramp_siren", size="tiny", description="a ramp")
    train_ids, valid_ids = held_out_split(volume.size)
    batch = jax.jit(task.batch)
    coords = np.asarray(voxel_coordinates(jnp.arange(volume.size), volume.shape))
    seen = set()
    for step in range(20):
        x, y = batch(jax.random.key(step), jnp.int32(step))
        assert x.shape == (512, 3) and y.shape == (512, 1)
        # map coordinates back to voxel ids, and check the targets are those voxels'
        ijk = np.rint((np.asarray(x) + 1) / 2 * 7).astype(int)
        ids = ijk[:, 0] * 64 + ijk[:, 1] * 8 + ijk[:, 2]
        np.testing.assert_allclose(np.asarray(x), coords[ids], atol=1e-6)
        np.testing.assert_allclose(np.asarray(y)[:, 0], volume.reshape(-1)[ids])
        seen.update(ids.tolist())
    assert not seen & set(valid_ids.tolist())
    assert len(seen) > 0.9 * len(train_ids)


def test_siren_task_rejects_bad_volumes():
    with pytest.raises(ValueError, match="3-D"):
        siren_task(np.zeros((4, 4)), name="x_siren", size="tiny", description="")
    with pytest.raises(ValueError, match=r"normalised to \[0, 1\]"):
        siren_task(np.full((4, 4, 4), 2.0), name="x_siren", size="tiny", description="")
    with pytest.raises(ValueError, match="unknown size"):
        siren_task(_ramp_volume(), name="x_siren", size="huge", description="")


# ---------------------------------------------------------------- the registered task


def test_tiny_volume_siren_trains_with_its_hand_preset():
    task = get_task("volume_siren", "tiny")
    assert task.metric == "psnr" and task.higher_is_better
    assert task.hand == {
        "name": "adamax",
        "learning_rate": 1e-3,
        "schedule": "warmup_cosine",
        "warmup_steps": 0,
    }
    tx = task.hand_preset()
    params = task.init(jax.random.key(0))

    @jax.jit
    def step(params, state, i):
        batch = task.batch(jax.random.fold_in(jax.random.key(1), i), i)
        value, grads = jax.value_and_grad(task.loss)(params, batch)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state, value

    state = tx.init(params)
    before = task.evaluate(params)
    losses = []
    for i in range(task.num_steps):
        params, state, value = step(params, state, jnp.int32(i))
        losses.append(float(value))
    after = task.evaluate(params)
    assert np.all(np.isfinite(losses)) and np.mean(losses[-5:]) < np.mean(losses[:5])
    assert np.isfinite(after["psnr"]) and after["psnr"] > before["psnr"]
    assert set(task.evaluate(params, "valid")) == {"psnr", "mse", "loss"}


def test_cpu_size_compresses_256_fold():
    """At "cpu" the SIREN has about voxels/256 parameters (the paper's compression)."""
    from hubopt.tasks.models.siren import num_params, width_for_params

    voxels = 64**3
    w = width_for_params(voxels / 256)
    assert abs(num_params(w) - voxels / 256) <= abs(num_params(w + 1) - voxels / 256)
    assert 200 < voxels / num_params(w) < 320


# ---------------------------------------------------------------- the real scan


def test_colin27_scan_loads_and_is_prepared():
    raw = volumes.load_volume(volumes.COLIN27_PATH)
    assert raw.shape == (301, 370, 316) and raw.min() == 0
    box = volumes.foreground_box(raw)
    assert all(s.stop - s.start > 250 for s in box)  # a whole brain, not a speck
    v = volumes.colin27_volume(16)
    assert v.shape == (16, 16, 16) and v.dtype == np.float32
    assert v.min() == 0.0 and v.max() == 1.0
    # cached: a second call reads the same array from disk
    assert np.array_equal(volumes.colin27_volume(16), v)
    assert list((cache_root() / "volume_colin27").glob("*.json"))


def test_missing_scan_names_the_debian_package(monkeypatch, tmp_path):
    monkeypatch.setattr(volumes, "COLIN27_PATH", tmp_path / "ch2better.nii.gz")
    with pytest.raises(FileNotFoundError, match="mricron-data"):
        volumes.colin27_volume(16)


# ---------------------------------------------------------------- preparing volumes


@pytest.mark.parametrize("n_in,n_out", [(8, 4), (9, 4), (5, 5), (4, 9), (3, 7), (10, 3)])
def test_resample_matrix_rows_are_weights(n_in, n_out):
    m = volumes.resample_matrix(n_in, n_out)
    assert m.shape == (n_out, n_in) and np.all(m >= 0)
    np.testing.assert_allclose(m.sum(axis=1), 1.0)
    # a ramp 0, 1, …, n − 1 becomes its average over each footprint, or is interpolated
    ramp = np.arange(n_in, dtype=np.float64)
    out = m @ ramp
    if n_out < n_in:  # each output voxel is the mean over its footprint [i·s, (i+1)·s)
        # of the piecewise-constant input, voxel j holding the value j on [j, j + 1)
        s = n_in / n_out
        for i in range(n_out):
            x = np.linspace(i * s, (i + 1) * s, 200_001)[:-1] + s / 400_000
            assert out[i] == pytest.approx(np.floor(x).mean(), abs=1e-4)
    elif n_out > n_in:  # the interpolated position, clamped to the ends
        pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        np.testing.assert_allclose(out, pos)


def test_resample_by_two_is_block_averaging():
    rng = np.random.default_rng(0)
    v = rng.random((8, 6, 4)).astype(np.float32)
    out = volumes.resample(v, (4, 3, 2))
    blocks = v.reshape(4, 2, 3, 2, 2, 2).mean(axis=(1, 3, 5))
    np.testing.assert_allclose(out, blocks, rtol=1e-5)


def test_prepare_volume_crops_resamples_and_normalises():
    v = np.zeros((20, 20, 20), np.float32)
    v[5:15, 4:12, 6:10] = np.arange(10 * 8 * 4, dtype=np.float32).reshape(10, 8, 4) + 100
    assert volumes.foreground_box(v) == (slice(5, 15), slice(4, 12), slice(6, 10))
    out = volumes.prepare_volume(v, 4, crop_threshold=0.0)
    assert out.shape == (4, 4, 4) and out.min() == 0.0 and out.max() == 1.0
    np.testing.assert_allclose(
        out, volumes.normalise(volumes.resample(v[5:15, 4:12, 6:10], (4,) * 3))
    )
    with pytest.raises(ValueError, match="constant"):
        volumes.prepare_volume(np.ones((4, 4, 4)), 4)
    with pytest.raises(ValueError, match="shape"):
        volumes.prepare_volume(v, (4, 4))
    with pytest.raises(ValueError, match="above the crop threshold"):
        volumes.foreground_box(np.ones((4, 4, 4)))


# ---------------------------------------------------------------- a user's volumes


def _volume(seed=0, shape=(5, 6, 7)):
    return np.random.default_rng(seed).integers(0, 200, shape).astype(np.uint8)


def test_load_volume_reads_npy_nifti_and_tiff(tmp_path):
    import nibabel
    from PIL import Image

    v = _volume()
    np.save(tmp_path / "v.npy", v)
    np.testing.assert_array_equal(volumes.load_volume(tmp_path / "v.npy"), v)

    nibabel.save(nibabel.Nifti1Image(v, np.eye(4)), tmp_path / "v.nii.gz")
    np.testing.assert_array_equal(volumes.load_volume(tmp_path / "v.nii.gz"), v)
    scaled = nibabel.Nifti1Image(v.astype(np.int16), np.eye(4))
    scaled.header.set_slope_inter(2.0, 1.0)
    nibabel.save(scaled, tmp_path / "scaled.nii")
    np.testing.assert_allclose(volumes.load_volume(tmp_path / "scaled.nii"), 2.0 * v + 1.0)

    folder = tmp_path / "slices"
    folder.mkdir()
    for i, page in enumerate(v):  # slice_9 must come before slice_10
        Image.fromarray(page).save(folder / f"slice_{i * 5}.tif")
    (folder / "notes.txt").write_text("not a slice")
    np.testing.assert_array_equal(volumes.load_volume(folder), v)

    pages = [Image.fromarray(page) for page in v]
    pages[0].save(tmp_path / "stack.tiff", save_all=True, append_images=pages[1:])
    np.testing.assert_array_equal(volumes.load_volume(tmp_path / "stack.tiff"), v)


def test_load_volume_errors_name_the_problem(tmp_path):
    from PIL import Image

    with pytest.raises(FileNotFoundError, match="no volume"):
        volumes.load_volume(tmp_path / "absent.npy")
    (tmp_path / "v.raw").write_bytes(b"\0" * 8)
    with pytest.raises(ValueError, match="unknown volume format"):
        volumes.load_volume(tmp_path / "v.raw")
    np.save(tmp_path / "flat.npy", np.zeros((4, 4)))
    with pytest.raises(ValueError, match="3-D"):
        volumes.load_volume(tmp_path / "flat.npy")
    bad = np.ones((3, 3, 3), np.float32)
    bad[0, 0, 0] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(ValueError, match="1 NaN"):
        volumes.load_volume(tmp_path / "nan.npy")
    np.save(tmp_path / "obj.npy", np.array([{}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError):  # never unpickled: allow_pickle=False
        volumes.load_volume(tmp_path / "obj.npy")
    (tmp_path / "broken.nii.gz").write_bytes(b"not a nifti file")
    with pytest.raises(ValueError, match="NIfTI"):
        volumes.load_volume(tmp_path / "broken.nii.gz")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no .tif"):
        volumes.load_volume(empty)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(mixed / "a.tif")
    Image.fromarray(np.zeros((4, 5), np.uint8)).save(mixed / "b.tif")
    with pytest.raises(ValueError, match="differ in size"):
        volumes.load_volume(mixed)
    rgb = tmp_path / "rgb"
    rgb.mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(rgb / "a.tif")
    with pytest.raises(ValueError, match="single-channel"):
        volumes.load_volume(rgb)


def test_volume_task_on_a_users_volume_and_its_cache(tmp_path):
    v = _volume(shape=(10, 12, 8))
    np.save(tmp_path / "organ.npy", v)
    task = volume_task(tmp_path / "organ.npy", size="tiny", shape=(8, 8, 8))
    assert task.name == "uservolume_siren" and "organ.npy" in task.description
    params = task.init(jax.random.key(0))
    assert np.isfinite(task.evaluate(params)["psnr"])
    entries = list((cache_root() / "volume_user").glob("*.json"))
    assert entries and json.loads(entries[0].read_text())
    # a changed file is a new recipe: the prepared volume follows the file
    np.save(tmp_path / "organ.npy", 255 - v)
    again = volumes.user_volume(tmp_path / "organ.npy", (8, 8, 8))
    np.testing.assert_allclose(again, volumes.prepare_volume(255 - v, (8, 8, 8)), rtol=1e-6)
    # an array works too
    from_array = volume_task(v.astype(np.float32), size="tiny", shape=(8, 8, 8))
    assert "an array of shape (10, 12, 8)" in from_array.description
