"""The paper's recurrent tasks at their tiny size: trajectory fitting and lane-keeping."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hubopt.tasks import get_task, lane_keeping, sine
from hubopt.tasks.sequence import Split, mean_predictor_mse

TUNING_RECORDS = Path(__file__).parent.parent / "benchmarks/records/tune_lane_keeping_cpu"
TASK_NAMES = ["sine_ltc", "sine_lstm", "carracing_lstm", "carracing_ltc", "nonconvex_l1cos"]


def _train_with_hand_preset(task, steps, fixed_batch=False):
    """`steps` steps of the task's hand preset: (initial params, final params, losses).

    With `fixed_batch`, every step sees the first step's minibatch."""
    tx = task.hand_preset()

    @jax.jit
    def step(carry, i):
        params, state = carry
        key = jax.random.fold_in(jax.random.key(1), 0 if fixed_batch else i)
        batch = task.batch(key, i) if task.stochastic else None
        value, grads = jax.value_and_grad(task.loss)(params, batch)
        updates, state = tx.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), value

    params = task.init(jax.random.key(0))
    carry = (params, tx.init(params))
    values = []
    for i in range(steps):
        carry, value = step(carry, jnp.int32(i))
        values.append(float(value))
    return params, carry[0], np.asarray(values)


@pytest.mark.parametrize("name", TASK_NAMES)
def test_tiny_task_trains_20_steps_with_its_hand_preset(name):
    task = get_task(name, size="tiny")
    assert task.size == "tiny" and task.name == name
    # on one minibatch, so that the fall is the optimizer's and not the batches' noise
    before, after, values = _train_with_hand_preset(task, 20, fixed_batch=True)
    assert np.all(np.isfinite(values))
    assert values[-1] < (0.9 if task.stochastic else 1.0) * values[0], values
    metrics = task.evaluate(after)
    assert task.metric in metrics
    assert all(np.isfinite(v) for v in metrics.values()), metrics


@pytest.mark.parametrize("name", ["sine_ltc", "sine_lstm", "carracing_lstm", "carracing_ltc"])
def test_sequence_tasks_report_mse_and_r2_on_three_splits(name):
    task = get_task(name, size="tiny")
    assert task.splits == ("train", "valid", "test") and task.metric == "mse"
    assert not task.higher_is_better and task.stochastic
    params = task.init(jax.random.key(0))
    for split in task.splits:
        m = task.evaluate(params, split)
        assert set(m) == {"loss", "mse", "r2", "mean_predictor_mse"} and m["loss"] == m["mse"]
        assert m["r2"] == pytest.approx(1 - m["mse"] / m["mean_predictor_mse"], abs=1e-5)


def test_hand_presets_are_the_papers_or_chosen_on_valid():
    sine_tx = get_task("sine_lstm", "tiny").hand
    assert sine_tx == {"name": "adam", "learning_rate": 0.01}
    assert lane_keeping.PAPER_HAND == {
        "name": "adam",
        "learning_rate": 0.01,
        "schedule": "step",
        "decay_every": 300,
        "decay_factor": 0.3,
    }
    # the lane-keeping rates are the committed tuning's choices (valid split, seeds 0-2),
    # with the paper's optimizer and step decay
    from hubopt.bench import records, report

    recs = records.read_all([TUNING_RECORDS])
    tuned = {result.task: sel for result, sel in report.tuned_results(recs)}
    for name in ("carracing_lstm", "carracing_ltc"):
        selection = tuned[name]
        assert selection["split"] == "valid" and selection["seeds"] == [0, 1, 2]
        hand = get_task(name, "tiny").hand
        assert hand == {**lane_keeping.PAPER_HAND, "learning_rate": selection["learning_rate"]}
        rates = [row["learning_rate"] for row in selection["grid"]]
        assert sorted(rates) == sorted(get_task(name, "tiny").lr_grid)
    lr = get_task("carracing_lstm", "tiny").hand["learning_rate"]
    # the step decay really multiplies the rate by 0.3 every 300 steps
    schedule = optax.exponential_decay(lr, 300, 0.3, staircase=True)
    params = {"w": jnp.zeros(())}
    tx = get_task("carracing_lstm", "tiny").hand_preset(num_steps=1000)
    state = tx.init(params)
    grads = {"w": jnp.ones(())}
    for step in range(700):
        updates, state = tx.update(grads, state, params)
        if step in (0, 299, 300, 600):
            # Adam's first update of a constant gradient has magnitude lr (bias-corrected)
            assert float(-updates["w"]) == pytest.approx(float(schedule(step)), rel=1e-3)


# ---------------------------------------------------------------- sine data


def test_sine_sequences_follow_the_formula():
    rng = np.random.default_rng(3)
    split = sine.sine_sequences(5, 48, rng)
    assert split.x.shape == (5, 48, 3) and split.y.shape == (5, 48, 1)
    # recover the phases from t = 0 and check the target by hand at every step
    rng = np.random.default_rng(3)
    phases = rng.uniform(0.0, 2 * np.pi, (5, 3))
    omega = 3 * np.pi / 48
    t = np.arange(48)
    for i in range(5):
        th = [(k + 1) * omega * t + phases[i, k] for k in range(3)]
        np.testing.assert_allclose(split.x[i, :, 1], np.sin(th[1]), atol=1e-6)
        expected = 0.6 * np.sin(2 * th[0]) + 0.4 * np.sin(th[1] + th[2])
        np.testing.assert_allclose(split.y[i, :, 0], expected, atol=1e-6)


def test_sine_splits_are_disjoint_and_fixed():
    size = sine.SIZES["tiny"]
    a, b = sine.sine_splits(size), sine.sine_splits(size)
    for name in ("train", "valid", "test"):
        np.testing.assert_array_equal(a[name].x, b[name].x)
    starts = {
        name: {tuple(np.round(s.x[i, 0], 5)) for i in range(len(s.x))} for name, s in a.items()
    }
    assert not starts["train"] & starts["valid"]
    assert not starts["train"] & starts["test"]
    assert not starts["valid"] & starts["test"]
    # predicting the mean scores E[y²] ≈ 0.26 on the cpu-size test split
    cpu = sine.sine_splits(sine.SIZES["cpu"])
    assert mean_predictor_mse(cpu) == pytest.approx(0.26, abs=0.02)


def test_sine_task_rejects_unknown_model_and_size():
    with pytest.raises(ValueError, match="model must be"):
        sine.make_task("gru", "tiny")
    with pytest.raises(ValueError, match="unknown size"):
        sine.make_task("lstm", "huge")


# ---------------------------------------------------------------- lane-keeping windows


def test_windows_never_cross_an_episode():
    episode = np.asarray([0] * 5 + [1] * 3 + [2] * 6)
    w = lane_keeping.windows(episode, window=3, stride=2)
    np.testing.assert_array_equal(w, [[0, 1, 2], [2, 3, 4], [5, 6, 7], [8, 9, 10], [10, 11, 12]])
    assert all(len(set(episode[row])) == 1 for row in w)
    assert lane_keeping.windows(episode, window=7, stride=1).tolist() == []
    with pytest.raises(ValueError, match="window and stride"):
        lane_keeping.windows(episode, 0, 1)


def test_frame_splits_overlap_only_in_training():
    n_ep, per = 6, 10
    data = {
        "frames": np.zeros((n_ep * per, 4, 4, 3), np.uint8),
        "steering": np.linspace(-1, 1, n_ep * per).astype(np.float32),
        "episode": np.repeat(np.arange(n_ep), per).astype(np.int32),
        "split": np.repeat([0, 0, 0, 0, 1, 2], per).astype(np.int8),
    }
    splits = lane_keeping.frame_splits(data, window=4)
    train, valid, test = splits["train"], splits["valid"], splits["test"]
    assert isinstance(train, Split)
    # training windows overlap by half; held-out windows tile their episode once
    assert train.x.shape == (4 * 4, 4)
    assert valid.x.tolist() == [[40, 41, 42, 43], [44, 45, 46, 47]]
    assert set(test.x.ravel()) <= set(range(50, 60))
    np.testing.assert_array_equal(test.y[..., 0], data["steering"][test.x])
    data["split"][:] = 0
    data["split"][-1] = 1
    data["split"][-2] = 2
    with pytest.raises(ValueError, match="no run of 4 consecutive frames"):
        lane_keeping.frame_splits(data, window=4)


def test_deeppicar_task_on_a_folder_the_test_writes(tmp_path):
    from PIL import Image

    for video in range(4):
        for frame in range(20):
            angle = 60 + 3 * frame
            colour = (10 * video, 5 * frame, 100)
            Image.new("RGB", (40, 30), colour).save(
                tmp_path / f"video{video:02d}_{frame:03d}_{angle:03d}.png"
            )
    task = lane_keeping.deeppicar_task("lstm", tmp_path, size="tiny")
    assert task.name == "deeppicar_lstm"
    before, after, values = _train_with_hand_preset(task, 5)
    assert np.all(np.isfinite(values))
    assert np.isfinite(task.evaluate(after)["mse"])
