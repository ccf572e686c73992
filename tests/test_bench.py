"""The bench harness: records, runner, report, optimizer registry, demo end to end."""

import csv
import io
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hubopt.bench import cli, optimizers, records, report, runner, sweep
from hubopt.tasks import Task, get_task, nonconvex

STEPS = 40
TASK = nonconvex.make_task(dim=10, num_steps=STEPS)
ADAM = {"name": "adam", "learning_rate": 1e-2}
STAND_IN = {"name": "stand-in", "optimizer": {"name": "adamax", "learning_rate": 2e-3}}


@pytest.fixture(scope="module")
def adam_record(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    path = runner.train_and_record(
        TASK, ADAM, num_steps=STEPS, seed=3, out_dir=out, command="pytest", log=lambda *_: None
    )
    return path, records.read(path)


# ----------------------------------------------------------------- runner


def test_runner_matches_a_plain_python_loop(adam_record):
    _, rec = adam_record
    init_key, _ = jax.random.split(jax.random.key(3))
    params = TASK.init(init_key)
    tx = optax.adam(1e-2)
    state = tx.init(params)
    losses = []
    for _ in range(STEPS):
        value, g = jax.value_and_grad(TASK.loss)(params, None)
        losses.append(float(value))
        u, state = tx.update(g, state, params)
        params = optax.apply_updates(params, u)
    final = float(TASK.loss(params, None))
    assert rec["final_loss"] == pytest.approx(final, rel=1e-5)
    np.testing.assert_allclose(rec["curve"]["loss"], losses, rtol=1e-5)
    assert rec["curve"]["step"] == list(range(STEPS))
    assert rec["best_loss"] == pytest.approx(min(losses + [final]), rel=1e-6)
    assert rec["eval"]["loss"][0] == pytest.approx(losses[0], rel=1e-6)
    assert rec["eval"]["step"][0] == 0 and rec["eval"]["step"][-1] == STEPS


def test_record_contents(adam_record):
    _, rec = adam_record
    assert rec["task"]["name"] == TASK.name and rec["seed"] == 3
    assert rec["optimizer"] == {"label": "adam@0.01", "spec": ADAM, "learned": None}
    assert rec["hyperparameters"] == {"name": "adam", "learning_rate": 1e-2}
    assert rec["timing"]["step_time_s"] > 0 and rec["timing"]["wall_time_s"] > 0
    meta = rec["meta"]
    assert meta["command"] == "pytest"
    assert meta["versions"]["jax"] == jax.__version__
    assert meta["versions"]["optax"] == optax.__version__
    for key in ("numpy", "flax", "python"):
        assert meta["versions"][key]
    assert meta["platform"] and meta["date"].endswith("+00:00") and "commit" in meta["git"]


def test_runner_refuses_to_clobber_and_reuses_identical_runs(adam_record, tmp_path):
    path, rec = adam_record
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="--overwrite"):
        runner.train_and_record(TASK, ADAM, num_steps=STEPS, seed=3, path=path, log=lambda *_: None)
    assert (
        runner.train_and_record(
            TASK, ADAM, num_steps=STEPS, seed=3, path=path, reuse=True, log=lambda *_: None
        )
        == path
    )
    other = dict(ADAM, learning_rate=0.5)
    with pytest.raises(FileExistsError, match="already exists"):
        runner.train_and_record(
            TASK, other, num_steps=STEPS, seed=3, path=path, reuse=True, log=lambda *_: None
        )
    assert path.read_bytes() == before
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]


def test_the_same_run_written_meanwhile_by_another_process_is_kept_and_another_is_an_error(
    adam_record, tmp_path, monkeypatch
):
    """Two sweeps on one folder may finish the same run: the second keeps the first's
    record instead of failing; a different run written there meanwhile is still refused."""
    path, rec = adam_record
    real_train = runner.train
    written_meanwhile = {}

    def train_while_another_process_writes(*args, **kwargs):
        result = real_train(*args, **kwargs)
        target = written_meanwhile["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(written_meanwhile["text"])
        return result

    monkeypatch.setattr(runner, "train", train_while_another_process_writes)
    same = tmp_path / "same" / path.name
    written_meanwhile.update(path=same, text=path.read_text())
    quiet = {"num_steps": STEPS, "seed": 3, "reuse": True, "log": lambda *_: None}
    assert runner.train_and_record(TASK, ADAM, path=same, **quiet) == same
    assert same.read_text() == path.read_text()  # the first writer's record stands
    assert not (same.parent / ".checkpoints").exists()
    other = tmp_path / "other" / path.name
    written_meanwhile.update(path=other, text=records.dumps(dict(rec, seed=4)))
    with pytest.raises(FileExistsError, match="already exists"):
        runner.train_and_record(TASK, ADAM, path=other, **quiet)
    assert records.read(other)["seed"] == 4


def test_fewer_evaluations_change_the_records_evaluations_and_nothing_of_the_training(
    adam_record, tmp_path
):
    _, rec = adam_record  # DEFAULT_EVALS evaluations
    path = runner.train_and_record(
        TASK, ADAM, num_steps=STEPS, seed=3, num_evals=2, out_dir=tmp_path, log=lambda *_: None
    )
    few = records.read(path)
    assert few["eval"]["step"] == [0, STEPS // 2, STEPS]
    assert len(rec["eval"]["step"]) == runner.DEFAULT_EVALS + 1
    assert few["curve"] == rec["curve"]  # the same training, step for step
    assert few["metrics"] == rec["metrics"] and few["final_loss"] == rec["final_loss"]
    at = [rec["eval"]["step"].index(s) for s in few["eval"]["step"]]
    assert few["eval"]["loss"] == [rec["eval"]["loss"][i] for i in at]
    # a record evaluated at other steps is another run: not reused, and the error says why
    with pytest.raises(FileExistsError, match="evaluated at 3 steps"):
        runner.train_and_record(
            TASK, ADAM, num_steps=STEPS, seed=3, path=path, reuse=True, log=lambda *_: None
        )
    again = dict(num_steps=STEPS, seed=3, num_evals=2, path=path, reuse=True)
    assert runner.train_and_record(TASK, ADAM, **again, log=lambda *_: None) == path
    with pytest.raises(ValueError, match="num_evals"):
        runner.train_and_record(TASK, ADAM, num_steps=STEPS, num_evals=0, path=path)


def test_runs_of_one_task_share_its_initial_params_and_compiled_evaluations(tmp_path):
    """A sweep runs every optimizer of a task and seed one after another: the task's params
    are initialised once per seed and its evaluations compiled once, not once per run."""
    inits, traces = [], []

    def init(key):
        inits.append(key)
        return {"w": jax.random.normal(key, (3,))}

    def loss(p, batch=None):
        return jnp.sum(p["w"] ** 2)

    def metrics(p, split):
        traces.append(split)
        return {"loss": loss(p) + {"train": 0.0, "valid": 1.0, "test": 2.0}[split]}

    task = Task("toy_shared", init, loss, 6, metrics_fn=metrics)
    paths = [
        runner.train_and_record(task, spec, seed=seed, out_dir=tmp_path, log=lambda *_: None)
        for spec, seed in ((ADAM, 0), (STAND_IN["optimizer"], 0), (ADAM, 1))
    ]
    assert len(inits) == 2  # seeds 0 and 1
    assert sorted(traces) == ["test", "valid"]  # every run's evaluations, one program each
    recs = [records.read(p) for p in paths]
    for rec in recs:  # the metrics are still each run's own
        w_loss = rec["metrics"]["test"]["loss"] - 2.0
        assert rec["metrics"]["valid"]["loss"] == pytest.approx(w_loss + 1.0)
        assert rec["eval"]["loss"][-1] == pytest.approx(rec["metrics"]["valid"]["loss"])
    assert recs[0]["eval"]["loss"][0] == recs[1]["eval"]["loss"][0]  # same start
    assert recs[0]["eval"]["loss"][0] != recs[2]["eval"]["loss"][0]  # another seed's
    assert recs[0]["metrics"] != recs[1]["metrics"]


def test_runner_bad_input():
    with pytest.raises(ValueError, match="num_steps"):
        runner.train_and_record(TASK, ADAM, num_steps=0, out_dir="unused")
    with pytest.raises(ValueError, match="unknown task"):
        runner.train_and_record("nope_task", ADAM, num_steps=3, out_dir="unused")
    with pytest.raises(optimizers.OptimizerSpecError, match="unknown optimizer"):
        runner.train_and_record(TASK, {"name": "sgdx"}, num_steps=3, out_dir="unused")
    with pytest.raises(ValueError, match="seed"):
        runner.train(TASK, optimizers.build(ADAM, 3), num_steps=3, seed=-1)


def test_subsample_keeps_last_step_and_window_means():
    values = np.arange(10, dtype=np.float64)
    c = runner._subsample(values, max_points=4)  # stride 3
    assert c["step"] == [0, 3, 6, 9]
    assert c["loss"] == [0.0, 3.0, 6.0, 9.0]
    assert c["loss_mean"] == [0.0, 2.0, 5.0, 8.0]  # means of [0], [1..3], [4..6], [7..9]
    c = runner._subsample(np.arange(7.0), max_points=3)  # stride 3, last step added
    assert c["step"] == [0, 3, 6]


def test_hub_record_diagnostics_have_uniform_sigma(tmp_path):
    # on this task every coordinate's |g| is the same, so softmax(|g|) = 1/d exactly
    spec = {"name": "hub", "hand": ADAM, "learned": STAND_IN, "mode": "default", "clip": None}
    rec = records.read(
        runner.train_and_record(TASK, spec, num_steps=10, out_dir=tmp_path, log=lambda *_: None)
    )
    stats = rec["diagnostics"]["hub"]["x"]
    for key in ("sigma_min", "sigma_mean", "sigma_max"):
        assert stats[key] == pytest.approx(0.1, rel=1e-5)
    assert rec["optimizer"]["learned"] == {
        "kind": "stand-in",
        "is_learned": False,
        "label": "stand-in adamax@0.002",
    }
    assert rec["optimizer"]["label"] == "hub(adam@0.01 | stand-in adamax@0.002)"


def test_hub_records_hold_sigma_histograms_of_the_steps_updates(tmp_path):
    """The histogram at step k is that of σ = clip(softmax(|g|)) of step k's gradient:
    checked against σ computed by hand from the run's own key, params and batch."""
    import hubopt

    task = get_task("sine_lstm", "tiny")
    spec = {
        "name": "hub",
        "hand": ADAM,
        "learned": STAND_IN,
        "mode": "inverted",
        "clip": [1e-4, 0.5],
    }
    rec = records.read(
        runner.train_and_record(task, spec, seed=2, out_dir=tmp_path, log=lambda *_: None)
    )
    hist = rec["sigma_histograms"]
    n = rec["num_steps"]
    assert hist["steps"][0] == 0 and hist["steps"][-1] == n - 1 and len(hist["steps"]) >= 3
    assert hist["edges"] == list(hubopt.SIGMA_HIST_EDGES)
    init_key, data_key = jax.random.split(jax.random.key(2))
    params = task.init(init_key)
    grads = jax.grad(task.loss)(params, task.batch(jax.random.fold_in(data_key, 0), 0))
    edges = np.asarray(hist["edges"], np.float32)
    leaves = jax.tree_util.tree_flatten_with_path(grads)[0]
    assert len(hist["counts"]) == len(leaves)
    for path, g in leaves:
        a = np.abs(np.asarray(g, np.float64)).ravel()
        sigma = np.clip(np.exp(a - a.max()) / np.exp(a - a.max()).sum(), 1e-4, 0.5)
        key = "/".join(str(getattr(k, "key", k)) for k in path)
        counts = hist["counts"][key]
        assert len(counts) == len(hist["steps"]) and all(sum(c) == a.size for c in counts)
        np.testing.assert_array_equal(counts[0], np.histogram(sigma, bins=edges)[0], err_msg=key)
    plain = records.read(
        runner.train_and_record(task, ADAM, num_steps=4, out_dir=tmp_path, log=lambda *_: None)
    )
    assert plain["sigma_histograms"] is None


def test_sigma_histograms_do_not_depend_on_how_the_run_is_cut_into_chunks():
    """Two histogram steps in one chunk of the training program (2 evaluations: steps 10
    and 19 share the second chunk) give the same counts as one step per chunk (20
    evaluations), where the two runs share a step."""
    task = get_task("sine_lstm", "tiny")
    spec = {"name": "hub", "hand": ADAM, "learned": STAND_IN, "sigma": "lognormal"}
    built = optimizers.build(spec, task.num_steps, warn_past_budget=False)
    hists = [
        runner.train(task, built, num_steps=20, seed=1, num_evals=k)["sigma_histograms"]
        for k in (2, 20)
    ]
    assert hists[0]["steps"] == [0, 10, 19] and hists[1]["steps"] == [0, 2, 10, 19]
    for path, counts in hists[0]["counts"].items():
        by_step = dict(zip(hists[1]["steps"], hists[1]["counts"][path], strict=True))
        assert counts == [by_step[s] for s in hists[0]["steps"]], path
    # and the histograms change over the run (a constant σ would pass the check above)
    assert any(c[0] != c[-1] for c in hists[1]["counts"].values())


def test_lgl2o_record_counts_its_steps(tmp_path):
    spec = {"name": "lgl2o", "hand": ADAM, "learned": STAND_IN}
    rec = records.read(
        runner.train_and_record(TASK, spec, num_steps=12, out_dir=tmp_path, log=lambda *_: None)
    )
    assert rec["diagnostics"]["lgl2o"]["steps"] == 12
    assert 0.0 <= rec["diagnostics"]["lgl2o"]["learned_win_fraction"] <= 1.0


def test_lgl2o_diagnostics_over_training_count_every_step(tmp_path):
    spec = {"name": "lgl2o", "hand": ADAM, "learned": STAND_IN}
    rec = records.read(
        runner.train_and_record(TASK, spec, num_steps=12, out_dir=tmp_path, log=lambda *_: None)
    )
    curve = rec["diagnostics_curve"]
    assert [d["step"] for d in curve] == rec["eval"]["step"]
    assert [d["lgl2o"]["steps"] for d in curve] == rec["eval"]["step"]
    assert curve[-1]["lgl2o"] == rec["diagnostics"]["lgl2o"]


def test_a_diverged_run_records_its_first_non_finite_step(tmp_path):
    rec = records.read(
        runner.train_and_record(
            TASK, {"name": "adam", "learning_rate": 1e30}, num_steps=STEPS, out_dir=tmp_path,
            log=lambda *_: None,
        )
    )  # fmt: skip
    losses = np.asarray(rec["curve"]["loss"])  # every step: STEPS < the curve's points
    first = int(np.flatnonzero(~np.isfinite(losses))[0])
    assert rec["first_nonfinite_step"] == first > 0
    assert math.isnan(rec["final_loss"]) or math.isinf(rec["final_loss"])


def test_records_hold_valid_metrics_over_training_and_step_time_statistics(tmp_path):
    from hubopt.tasks import get_task

    task = get_task("sine_lstm", "tiny")
    rec = records.read(
        runner.train_and_record(task, dict(task.hand), out_dir=tmp_path, log=lambda *_: None)
    )
    valid = rec["eval"]["valid"]
    assert set(valid) == {"mse", "r2", "mean_predictor_mse"}
    assert all(len(v) == len(rec["eval"]["step"]) for v in valid.values())
    # the last evaluation is the final params' valid metrics
    assert valid["mse"][-1] == pytest.approx(rec["metrics"]["valid"]["mse"], rel=1e-5)
    assert valid["mse"] == pytest.approx(rec["eval"]["loss"], rel=1e-6)  # loss is the mse
    stats = rec["timing"]["step_time_stats_s"]
    assert stats["min"] <= rec["timing"]["step_time_s"] <= stats["max"]
    assert stats["chunks"] == len(rec["eval"]["step"]) - 1
    assert rec["first_nonfinite_step"] is None


def test_records_name_the_bundled_theta_by_its_hash(tmp_path):
    import hashlib

    from hubopt.learned.small_lopt import bundled

    spec = {"name": "hub", "hand": ADAM, "learned": {"name": "small"}}
    built = optimizers.build(spec, 10)
    expected = hashlib.sha256((bundled.WEIGHTS_DIR / "small.msgpack").read_bytes()).hexdigest()
    assert built.learned["theta_sha256"] == expected
    assert optimizers.build({"name": "small"}, 10).learned["theta_sha256"] == expected


def test_record_file_names_keep_exponent_signs():
    big = runner.record_path(
        "r", "t_x", optimizers.label({"name": "adam", "learning_rate": 1e6}), 0
    )
    small = runner.record_path(
        "r", "t_x", optimizers.label({"name": "adam", "learning_rate": 1e-6}), 0
    )
    assert big != small and big.name == "t_x__adam-1e6__seed0.json"


# ----------------------------------------------------------------- records


def test_records_round_trip_and_atomic_no_clobber(adam_record, tmp_path):
    _, rec = adam_record
    path = records.write(rec, tmp_path / "sub" / "r.json")
    assert records.read(path) == rec
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        records.write(dict(rec, seed=99), path)
    assert records.read(path)["seed"] == rec["seed"]
    records.write(dict(rec, seed=99), path, overwrite=True)
    assert records.read(path)["seed"] == 99
    assert sorted(p.name for p in path.parent.iterdir()) == ["r.json"]


def test_non_finite_losses_round_trip(adam_record, tmp_path):
    _, rec = adam_record
    rec = json.loads(json.dumps(rec))
    rec["final_loss"] = float("inf")
    rec["curve"]["loss"][-1] = float("nan")
    back = records.read(records.write(rec, tmp_path / "r.json"))
    assert back["final_loss"] == float("inf") and np.isnan(back["curve"]["loss"][-1])


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda r: r.pop("meta"), "missing field 'meta'"),
        (lambda r: r.update(schema="other/9"), "schema"),
        (lambda r: r.update(seed="0"), "'seed' has the wrong type"),
        (lambda r: r.update(seed=True), "'seed' has the wrong type"),
        (lambda r: r["curve"]["loss"].pop(), "differ in length"),
        (lambda r: r["curve"]["step"].reverse(), "increase strictly"),
        (lambda r: r["eval"]["loss"].__setitem__(0, "x"), "numbers only"),
        (lambda r: r["optimizer"].pop("label"), "optimizer.label"),
        (lambda r: r.update(best_loss=1e9), "exceeds final_loss"),
        (lambda r: r.update(num_steps=0), "num_steps"),
    ],
)
def test_validation_names_the_problem(adam_record, edit, match):
    _, rec = adam_record
    bad = json.loads(json.dumps(rec))
    edit(bad)
    with pytest.raises(records.RecordError, match=match):
        records.validate(bad)


def test_unreadable_records_name_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(records.RecordError, match="bad.json.*not valid JSON"):
        records.read(bad)
    with pytest.raises(records.RecordError, match="no such record"):
        records.read(tmp_path / "missing.json")
    (tmp_path / "empty").mkdir()
    with pytest.raises(records.RecordError, match="no record files"):
        records.find([tmp_path / "empty"])
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(records.RecordError, match="must be a JSON object"):
        records.read(tmp_path / "list.json")


# ----------------------------------------------------------------- report


def _fake_seed(rec, seed, best, final):
    r = json.loads(json.dumps(rec))
    r.update(seed=seed, best_loss=best, final_loss=final)
    return r


def test_summarize_by_hand(adam_record):
    _, rec = adam_record
    recs = [_fake_seed(rec, s, b, f) for s, b, f in [(0, 1.0, 4.0), (1, 3.0, 5.0), (2, 2.0, 9.0)]]
    (row,) = report.summarize(recs)
    assert row.seeds == (0, 1, 2)
    assert row.best == (2.0, 1.0, 3.0) and row.final == (5.0, 4.0, 9.0)
    with pytest.raises(records.RecordError, match="share a seed"):
        report.summarize(recs + [recs[0]])


def test_steps_to_target():
    assert report.steps_to_target([0, 10, 20], [5.0, 1.0, 0.5], 1.0) == 10.0
    assert report.steps_to_target([0, 10], [5.0, float("nan")], 1.0) == float("inf")
    assert report.steps_to_target([], [], 1.0) == float("inf")


def test_report_is_made_from_records_on_disk(adam_record, tmp_path):
    _, rec = adam_record
    rec_dir = tmp_path / "records"
    for seed, best in [(0, 0.125), (1, 0.25)]:
        records.write(_fake_seed(rec, seed, best, 1.0), rec_dir / f"r{seed}.json")
    # edit a record on disk: the table must show the edited number
    p = rec_dir / "r1.json"
    edited = json.loads(p.read_text())
    edited["best_loss"] = 0.5
    p.write_text(json.dumps(edited))
    files = report.report([rec_dir], tmp_path / "rep", report_command="pytest report")
    md = files["table_md"].read_text()
    assert "adam@0.01" in md and "0.3125 [0.125, 0.5]" in md  # median of 0.125 and 0.5
    assert "pytest report" in md and jax.__version__ in md
    rows = list(csv.DictReader(io.StringIO(files["table_csv"].read_text())))
    assert len(rows) == 1 and float(rows[0]["best_max"]) == 0.5 and rows[0]["seeds"] == "0 1"
    png = files["figure"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_report_rejects_a_bad_record(adam_record, tmp_path):
    _, rec = adam_record
    records.write(rec, tmp_path / "good.json")
    (tmp_path / "broken.json").write_text("{}")
    with pytest.raises(records.RecordError, match="broken.json"):
        report.report([tmp_path], tmp_path / "rep")


# ----------------------------------------------------------------- optimizers


@pytest.mark.parametrize(
    "spec, label",
    [
        ({"name": "adam", "learning_rate": 1e-3}, "adam@0.001"),
        ({"name": "adamw", "learning_rate": 1e-3, "weight_decay": 1e-4}, "adamw@0.001"),
        (
            {
                "name": "adamax",
                "learning_rate": 2e-3,
                "schedule": "warmup_cosine",
                "warmup_steps": 2,
            },
            "adamax@0.002+warmup_cosine",
        ),
        (
            {
                "name": "hub",
                "hand": ADAM,
                "learned": STAND_IN,
                "mode": "inverted",
                "clip": [0.01, 0.5],
            },
            "hub[inverted; clip=0.01,0.5](adam@0.01 | stand-in adamax@0.002)",
        ),
        (
            {"name": "hub", "hand": ADAM, "learned": STAND_IN, "sigma": "rank"},
            "hub[sigma=rank](adam@0.01 | stand-in adamax@0.002)",
        ),
        (
            {"name": "lgl2o", "hand": ADAM, "learned": STAND_IN},
            "lgl2o(adam@0.01 | stand-in adamax@0.002)",
        ),
        (
            {"name": "blend", "hand": ADAM, "learned": STAND_IN, "lam": 0.25},
            "blend[λ=0.25](adam@0.01 | stand-in adamax@0.002)",
        ),
    ],
)
def test_build_and_label(spec, label):
    built = optimizers.build(spec, num_steps=20)
    assert built.label == label
    params = {"w": jax.numpy.ones(3)}
    state = built.tx.init(params)
    u, _ = built.tx.update(
        {"w": jax.numpy.ones(3)},
        state,
        params,
        value=jax.numpy.float32(1.0),
        value_fn=lambda p: jax.numpy.sum(p["w"]),
    )
    if spec.get("schedule") == "warmup_cosine":
        assert np.all(np.asarray(u["w"]) == 0)  # warm-up starts from a zero learning rate
    else:
        assert np.all(np.asarray(u["w"]) < 0)  # every member descends on a positive gradient


def test_blend_of_stand_in_equals_the_formula():
    spec = {"name": "blend", "hand": ADAM, "learned": STAND_IN, "lam": 0.25}
    params = {"w": jax.numpy.asarray([1.0, -2.0])}
    g = {"w": jax.numpy.asarray([0.5, -3.0])}
    tx = optimizers.build(spec, 5).tx
    u, _ = tx.update(g, tx.init(params), params)
    ua, _ = optax.adam(1e-2).update(g, optax.adam(1e-2).init(params), params)
    ux, _ = optax.adamax(2e-3).update(g, optax.adamax(2e-3).init(params), params)
    np.testing.assert_allclose(u["w"], 0.25 * ua["w"] + 0.75 * ux["w"], rtol=1e-6)


@pytest.mark.parametrize(
    "spec, match",
    [
        ({"name": "sgdx"}, "unknown optimizer 'sgdx'"),
        ({"name": "hub", "hand": ADAM}, "needs a 'learned' spec"),
        ({"name": "hub", "hand": {"name": "velo"}, "learned": STAND_IN}, "hand must be one of"),
        ({"name": "hub", "hand": ADAM, "learned": {"name": "adam"}}, "learned must be one of"),
        (
            {
                "name": "hub",
                "hand": ADAM,
                "learned": {"name": "stand-in", "optimizer": {"name": "velo"}},
            },
            "stand-in must name a hand-designed",
        ),
        ({"name": "blend", "hand": ADAM, "learned": STAND_IN}, "needs 'lam'"),
        ({"name": "adam", "lr": 1e-3}, "unknown field"),
        ("adam", "must be a dict"),
    ],
)
def test_bad_specs_are_named(spec, match):
    with pytest.raises(optimizers.OptimizerSpecError, match=match):
        optimizers.build(spec, num_steps=10)


def test_learned_slot_and_resolution():
    assert optimizers.learned_slot(ADAM) is None
    assert optimizers.learned_slot({"name": "velo"}) == {
        "kind": "velo",
        "is_learned": True,
        "label": "velo",
    }
    choice = optimizers.resolve_learned("none")
    assert not choice.available and "none" in choice.reason
    with pytest.raises(optimizers.OptimizerSpecError, match="learned must be"):
        optimizers.resolve_learned("vel0")
    auto = optimizers.resolve_learned("auto")
    assert auto.available == (auto.spec is not None) and auto.reason
    if auto.available:
        assert auto.spec["name"] in optimizers.LEARNED
    else:
        assert "no learned optimizer is available" in auto.reason


def test_velo_is_unavailable_without_its_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HUBOPT_CACHE", str(tmp_path / "empty-cache"))
    choice = optimizers.resolve_learned("velo")
    assert not choice.available and "VeLO" in choice.reason


# ----------------------------------------------------------------- CLI and demo


def test_cli_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in out
    assert cli.main([]) == 2


def test_cli_missing_module_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setitem(cli.COMMANDS, "later", ("hubopt.not_written_yet", "a future command"))
    assert cli.main(["later", "--x"]) == 2
    err = capsys.readouterr().err
    assert "hubopt later" in err and "hubopt.not_written_yet" in err and "Traceback" not in err


def test_cli_run_bad_input(tmp_path, capsys):
    assert cli.main(["run", "nope_task", "--opt", "adam", "--out", str(tmp_path)]) == 2
    assert "unknown task 'nope_task'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["run", "nonconvex_l1cos", "--opt", "adam", "--steps", "0"])
    assert "positive integer" in capsys.readouterr().err
    assert cli.main(["run", "nonconvex_l1cos", "--opt", "rmsprop", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown optimizer rmsprop" in err and "^^^^^^^" in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())  # nothing written


def test_cli_run_writes_records(tmp_path, capsys):
    args = [
        "run",
        "nonconvex_l1cos",
        "--opt",
        "hub:adam+stand-in(opt=adamax)",
        "--steps",
        "5",
        "--seeds",
        "0",
        "1",
        "--out",
        str(tmp_path),
    ]
    assert cli.main(args) == 0
    recs = records.read_all([tmp_path])
    assert [r["seed"] for r in recs] == [0, 1]
    assert recs[0]["meta"]["command"].startswith("hubopt run nonconvex_l1cos --opt")
    assert recs[0]["optimizer"]["spec"]["learned"] == {
        "name": "stand-in",
        "optimizer": {"name": "adamax", "learning_rate": 2e-3},
    }
    assert cli.main(args) == 1  # refuses to clobber
    assert "--overwrite" in capsys.readouterr().err


def test_cli_run_a_theta_file_records_its_hash(tmp_path, capsys):
    """A meta-training run's θ file runs in the harness, named by its content hash."""
    import hashlib

    from hubopt.learned import MLPLOpt, write_checkpoint

    lopt = MLPLOpt(hidden_sizes=(4,))
    theta_file = write_checkpoint(tmp_path / "theta.msgpack", lopt.init(jax.random.PRNGKey(0)))
    spec = f"hub:adam+theta(path={theta_file})"
    base = ["run", "nonconvex_l1cos", "--steps", "3", "--seeds", "0", "--out"]
    assert cli.main([*base, str(tmp_path / "r"), "--opt", spec]) == 0
    (rec,) = records.read_all([tmp_path / "r"])
    learned = rec["optimizer"]["learned"]
    assert learned["theta_sha256"] == hashlib.sha256(theta_file.read_bytes()).hexdigest()
    assert learned["kind"] == "theta" and learned["theta_path"] == str(theta_file.resolve())
    assert rec["optimizer"]["label"] == f"hub(adam@0.001 | theta({theta_file}))"
    # a file that is not a θ: a clear error, no record
    bad = ["--opt", f"theta,path={tmp_path / 'nope.msgpack'}"]
    assert cli.main([*base, str(tmp_path / "bad"), *bad]) == 1
    err = capsys.readouterr().err
    assert "nope.msgpack" in err and "does not exist" in err and "Traceback" not in err
    assert not (tmp_path / "bad").exists() or not list((tmp_path / "bad").iterdir())


def test_cli_run_a_sized_task_with_its_preset_records_its_metrics(tmp_path, capsys):
    base = ["run", "sine_lstm", "--size", "tiny", "--seed", "0", "--out"]
    assert cli.main([*base, str(tmp_path / "a"), "--opt", "preset"]) == 0
    (rec,) = records.read_all([tmp_path / "a"])
    assert rec["task"]["size"] == "tiny" and rec["task"]["metric"] == "mse"
    assert rec["optimizer"]["spec"] == {"name": "adam", "learning_rate": 0.01}
    assert rec["num_steps"] == 20  # the tiny size's budget
    # final metrics on valid and test, and the final eval loss is the valid split's
    assert set(rec["metrics"]) == {"valid", "test"}
    assert rec["final_loss"] == pytest.approx(rec["metrics"]["valid"]["loss"], rel=1e-5)
    assert rec["metrics"]["test"]["mse"] != rec["metrics"]["valid"]["mse"]
    hub_args = ["--opt", "hub:preset+stand-in(opt=adamax)"]
    assert cli.main([*base, str(tmp_path / "b"), *hub_args]) == 0
    (rec,) = records.read_all([tmp_path / "b"])
    assert rec["optimizer"]["spec"]["hand"] == {"name": "adam", "learning_rate": 0.01}
    # a bare hand name takes the task's settings, options override them
    assert cli.main([*base, str(tmp_path / "c"), "--opt", "adamax,lr=0.1"]) == 0
    (rec,) = records.read_all([tmp_path / "c"])
    assert rec["optimizer"]["spec"] == {"name": "adamax", "learning_rate": 0.1}
    table = report.metrics_table(records.read_all([tmp_path / "a", tmp_path / "b"]))
    assert "mse" in table and "r2" in table and "(lower is better)" in table


def test_metrics_table_mean_std_and_divergence():
    assert report._mean_std([1.0, 3.0]) == "2 ± 1.4"
    assert report._mean_std([1.0, float("nan"), 2.0]) == "NaN (1 of 3 seeds)"
    assert report._mean_std([5.0]) == "5 (1 seed)"
    assert report.metrics_table([]) == ""


def test_demo_end_to_end(tmp_path, capsys, monkeypatch):
    # the demo's tasks at their tiny sizes (the real grid is checked below without running)
    tiny = tuple((task, "tiny", None) for task, _, _ in sweep.DEMO_TASKS)
    monkeypatch.setattr(sweep, "DEMO_TASKS", tiny)
    out = tmp_path / "demo"
    argv = ["demo", "--steps", "30", "--seeds", "1", "--out", str(out)]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    recs = records.read_all([out / "records"])
    assert {r["task"]["name"] for r in recs} == {t for t, _, _ in tiny}
    assert len(recs) == len(tiny) * len(sweep.DEMO_CONTENDERS)
    labels = {r["optimizer"]["label"] for r in recs}
    assert "adam@0.001" in labels
    assert any(lab.startswith("hub(") for lab in labels)
    assert any(lab.startswith("hub[clip=") for lab in labels)
    assert any(lab.startswith("lgl2o(") for lab in labels)
    for r in recs:
        assert r["num_steps"] == 30 and r["seed"] == 0
        slot = r["optimizer"]["learned"]
        if slot is not None and not slot["is_learned"]:
            assert "stand-in" in r["optimizer"]["label"]
    stand_in = any(
        r["optimizer"]["learned"] and not r["optimizer"]["learned"]["is_learned"] for r in recs
    )
    if stand_in:
        assert "WARNING" in text and "NOT learned" in text and "STAND-IN" in text
    else:
        assert "Learned optimizer used:" in text
    # every |g_i| is equal on the non-convex function, so σ = 1/d = 0.001 for d = 1000
    assert "σ min/mean/max = 0.001/0.001/0.001" in text
    assert "| task | optimizer | metric (mean ± std) |" in text  # the short table
    html = out / "index.html"
    assert f"Report (open in a browser): {html.resolve()}" in text
    assert html.stat().st_size > 10_000 and "data:image/png;base64," in html.read_text()
    for name in ("table.md", "table.csv", "loss_curves.png"):
        assert (out / name).stat().st_size > 0
    # rerun: identical runs are reused; other steps into the same folder is refused
    mtimes = {p: os.stat(p).st_mtime_ns for p in (out / "records").iterdir()}
    assert cli.main(argv) == 0
    assert {p: os.stat(p).st_mtime_ns for p in (out / "records").iterdir()} == mtimes
    assert cli.main(["demo", "--steps", "31", "--seeds", "1", "--out", str(out)]) == 1
    assert "--overwrite" in capsys.readouterr().err


def test_demo_can_skip_the_combinations_without_a_learned_optimizer(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sweep, "DEMO_TASKS", (("nonconvex_l1cos", "tiny", None),))
    out = tmp_path / "demo"
    args = ["demo", "--steps", "20", "--seeds", "2", "--learned", "none"]
    assert cli.main([*args, "--without-learned", "skip", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "HUB and LGL2O are skipped" in text and "No learned optimizer was used" in text
    recs = records.read_all([out / "records"])
    assert sorted((r["optimizer"]["label"], r["seed"]) for r in recs) == [
        ("adam@0.001", 0),
        ("adam@0.001", 1),
    ]
    assert cli.main([*args, "--out", str(tmp_path / "stand-in")]) == 0  # the default
    text = capsys.readouterr().out
    assert "STAND-IN" in text and "NOT learned" in text
    slots = [r["optimizer"]["learned"] for r in records.read_all([tmp_path / "stand-in"])]
    assert [s for s in slots if s] and all(not s["is_learned"] for s in slots if s)


def test_demo_preset_is_the_demo_grid():
    # one recurrent task and one network with a tensor of at least 10⁴ entries
    assert "sine_lstm" in {t for t, _, _ in sweep.DEMO_TASKS}
    ((_, size, _),) = [d for d in sweep.DEMO_TASKS if d[0] == "fmnist_mlp"]
    mlp = get_task("fmnist_mlp", size=size)
    assert max(x.size for x in jax.tree.leaves(jax.eval_shape(mlp.init, jax.random.key(0)))) >= 1e4
    points = sweep.preset_points("demo")
    assert points == sweep.demo_points(2, "small")
    assert {p.seed for p in points} == {0, 1}
    with pytest.raises(ValueError, match="own sizes"):
        sweep.preset_points("demo", size="tiny")


def test_console_entry_point_help():
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "hubopt.bench.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and "meta-train" in proc.stdout and "demo" in proc.stdout


SHARED_VELO = __import__("pathlib").Path(__file__).resolve().parents[1].parent / "shared" / "velo"


@pytest.mark.skipif(
    not (SHARED_VELO / "small" / "params").is_file(),
    reason=f"VeLO test checkpoint not found at {SHARED_VELO} (../shared/velo)",
)
def test_demo_uses_velo_when_its_checkpoint_is_cached(tmp_path, monkeypatch, capsys):
    # A cache holding the small random-theta test checkpoint (VeLO's format, not its
    # trained weights): only the code path and the labelling are checked here.
    import hashlib
    import shutil

    cache = tmp_path / "cache" / "velo"
    cache.mkdir(parents=True)
    shutil.copy(SHARED_VELO / "small" / "params", cache / "params")
    sha = hashlib.sha256((cache / "params").read_bytes()).hexdigest()
    (cache / "params.sha256").write_text(sha + "\n")
    monkeypatch.setenv("HUBOPT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sweep, "DEMO_TASKS", (("nonconvex_l1cos", "tiny", None),))
    out = tmp_path / "demo"
    assert cli.main(["demo", "--steps", "8", "--seeds", "1", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Learned optimizer used: VeLO" in text and "WARNING" not in text
    recs = {r["optimizer"]["label"]: r for r in records.read_all([out / "records"])}
    assert set(recs) == {
        "adam@0.001",
        "velo",
        "lgl2o(adam@0.001 | velo)",
        "hub(adam@0.001 | velo)",
        "hub[clip=0.1,0.9](adam@0.001 | velo)",
    }
    slot = recs["hub(adam@0.001 | velo)"]["optimizer"]["learned"]
    assert slot["kind"] == "velo" and slot["is_learned"] and slot["sha256"] == sha


def test_runner_draws_a_batch_per_step_for_stochastic_tasks(tmp_path):
    import jax.numpy as jnp

    from hubopt.tasks import Task

    w_true = jnp.arange(3.0)

    def batch(key, step):
        x = jax.random.normal(key, (8, 3))
        return x, x @ w_true

    def loss(params, b):
        x, y = b
        return jnp.mean((x @ params["w"] - y) ** 2)

    task = Task(
        "synthetic_linreg",
        lambda k: {"w": jnp.zeros(3)},
        loss,
        30,
        batch=batch,
        eval_fn=lambda p: jnp.sum((p["w"] - w_true) ** 2),
    )
    rec = records.read(
        runner.train_and_record(
            task,
            {"name": "adam", "learning_rate": 0.1},
            seed=5,
            out_dir=tmp_path,
            log=lambda *_: None,
        )
    )
    _, data_key = jax.random.split(jax.random.key(5))
    expected = [float(loss({"w": jnp.zeros(3)}, batch(jax.random.fold_in(data_key, 0), 0)))]
    assert rec["num_steps"] == 30 and rec["curve"]["loss"][0] == pytest.approx(expected[0])
    assert rec["eval"]["loss"][0] == pytest.approx(float(jnp.sum(w_true**2)))  # eval_fn used
    assert rec["eval"]["loss"][-1] < rec["eval"]["loss"][0]
    assert rec["best_loss"] == min(rec["eval"]["loss"])  # evaluations only when stochastic


def test_cli_report(adam_record, tmp_path, capsys):
    path, _ = adam_record
    out = tmp_path / "rep"
    assert cli.main(["report", str(path), "--out", str(out)]) == 0
    assert f"by: hubopt report {path} --out {out}" in (out / "table.md").read_text()
    assert "adam@0.01" in capsys.readouterr().out
    assert cli.main(["report", str(tmp_path / "nothing-here")]) == 1
    assert "no such file or folder" in capsys.readouterr().err


def test_a_run_shows_a_progress_bar_only_when_asked_or_on_a_terminal(capsys):
    task = nonconvex.make_task(dim=8, num_steps=20)
    built = optimizers.build({"name": "adam", "learning_rate": 1e-3}, 20)
    runner.train(task, built, num_steps=20, seed=0, num_evals=4)
    assert capsys.readouterr().err == ""  # pytest's stderr is not a terminal: quiet
    runner.train(task, built, num_steps=20, seed=0, num_evals=4, progress=True)
    err = capsys.readouterr().err
    assert "adam@0.001 seed 0" in err and "/20" in err and "step" in err
