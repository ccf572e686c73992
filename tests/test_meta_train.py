"""The outer loop: it lowers the meta-loss, checkpoints, resumes bit for bit, and its
numbers are pinned (a short run against tests/golden/meta_train_tiny.json)."""

import dataclasses
import hashlib
import json
import platform
import shlex
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from hubopt.learned.checkpoint import read_checkpoint
from hubopt.learned.meta import task_distribution as td
from hubopt.learned.meta.train import MetaTrainConfig, meta_train
from hubopt.learned.small_lopt.architecture import GEN_ID_RELATIVE

TINY = dict(
    tasks=(td.TINY_TASKS[0].name,),  # one task: one compile (compiling dominates)
    tasks_per_step=1,
    num_pairs=4,
    trunc_len=5,
    horizons=(10, 20),
    hidden=(4,),
    checkpoint_every=2,
    sigma=0.05,
    meta_lr=1e-2,
)


GOLDEN = Path(__file__).parent / "golden" / "meta_train_tiny.json"
PINNED = MetaTrainConfig(outer_steps=5, relative_correction=True, **TINY)


def _flat(tree):
    return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree_util.tree_leaves(tree)])


@pytest.fixture(scope="module")
def pinned_run(tmp_path_factory):
    """The pinned configuration's 5 outer steps, uninterrupted."""
    out = tmp_path_factory.mktemp("pinned")
    return out, meta_train(PINNED, out, progress=False)


def test_short_run_matches_its_pinned_numbers(pinned_run):
    """A change in meta-training's numerics (features, update rule, estimator, task data)
    moves θ by far more than the tolerance; a machine's rounding (another CPU, XLA
    version) moves it by ~1e-7. The bytes are pinned too, but only reported: they match
    on the machine and jax version the golden file names."""
    out, result = pinned_run
    golden = json.loads(GOLDEN.read_text())
    # the same configuration (fields added since default to what the golden run used)
    assert MetaTrainConfig.from_json(golden["config"]) == PINNED
    np.testing.assert_allclose(_flat(result.theta), golden["theta"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        [np.mean(r["meta_loss"]) for r in result.log], golden["meta_loss"], rtol=1e-4
    )
    sha = hashlib.sha256((out / "theta.msgpack").read_bytes()).hexdigest()
    print(f"theta.msgpack sha256 {sha}; golden {golden['theta_sha256']} ({golden['made_on']})")


def test_resume_equals_uninterrupted(tmp_path, pinned_run):
    full = pinned_run[1]
    part = meta_train(dataclasses.replace(PINNED, outer_steps=3), tmp_path / "b", progress=False)
    assert part.step == 3
    # the checkpoint after step 3 exists even though 3 is not a multiple of 2
    assert read_checkpoint(tmp_path / "b" / "checkpoint.msgpack")["step"] == 3
    rest = meta_train(PINNED, tmp_path / "b", progress=False)
    assert rest.step == 5
    np.testing.assert_array_equal(_flat(full.theta), _flat(rest.theta))
    log_a = [json.loads(s) for s in (pinned_run[0] / "log.jsonl").read_text().splitlines()]
    log_b = [json.loads(s) for s in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log_b] == list(range(5))
    assert log_a == log_b
    # theta.msgpack is θ alone, readable by the shared checkpoint reader
    th = read_checkpoint(tmp_path / "b" / "theta.msgpack")
    np.testing.assert_array_equal(_flat(th["params"]), _flat(rest.theta))
    assert not np.array_equal(
        _flat(full.theta),
        _flat(MetaTrainConfig(**TINY).lopt().init(jax.random.split(jax.random.PRNGKey(0), 3)[0])),
    )


def test_resume_refuses_other_config(tmp_path):
    meta_train(MetaTrainConfig(outer_steps=2, **TINY), tmp_path, progress=False)
    with pytest.raises(ValueError, match="another configuration"):
        meta_train(
            MetaTrainConfig(outer_steps=2, **{**TINY, "sigma": 0.1}), tmp_path, progress=False
        )


def test_config_validation():
    with pytest.raises(ValueError, match="estimator"):
        MetaTrainConfig(estimator="sgd")
    with pytest.raises(ValueError, match="unknown meta task"):
        MetaTrainConfig(tasks=("nope_task",))
    with pytest.raises(ValueError, match="tasks_per_step"):
        MetaTrainConfig(**{**TINY, "tasks_per_step": 2})
    with pytest.raises(ValueError, match="step_decay must be one of"):
        MetaTrainConfig(**{**TINY, "step_decay": "linear"})


def test_cli_and_export_bundle(tmp_path):
    from hubopt.bench.cli import main
    from hubopt.learned.meta.export import export_bundle

    run = tmp_path / "run"
    flags = [
        "--tasks",
        ",".join(TINY["tasks"]),
        "--tasks-per-step",
        "1",
        "--num-pairs",
        "4",
        "--trunc-len",
        "5",
        "--horizons",
        "10,20",
        "--hidden",
        "4",
        "--checkpoint-every",
        "2",
        "--sigma",
        "0.05",
        "--meta-lr",
        "0.01",
        "--outer-steps",
        "2",
        "--relative-correction",
        "--no-factored-features",
        "--step-decay",
        "cosine",
        "--snapshot-every",
        "1",
        "--quiet",
    ]
    assert main(["meta-train", "--out", str(run), *flags]) == 0
    info = json.loads((run / "run_info.json").read_text())
    assert info["outer_steps_done"] == 2 and info["sessions"][0]["command"].startswith(
        "hubopt meta-train --out"
    )
    assert main(["meta-train", "--out", str(run), "--no-resume", *flags]) == 2
    prov = export_bundle(run, tmp_path / "weights" / "tiny")
    assert "--outer-steps 2" in prov["command"] and "--hidden 4" in prov["command"]
    assert prov["seed"] == 0 and prov["wall_s"] > 0 and prov["lopt"]["hidden_sizes"] == [4]
    back = read_checkpoint(tmp_path / "weights" / "tiny.msgpack")
    ref = read_checkpoint(run / "theta.msgpack")
    np.testing.assert_array_equal(_flat(back["params"]), _flat(ref["params"]))
    assert (tmp_path / "weights" / "tiny.provenance.json").exists()
    # the variant travels: in the θ file's gen_id, the provenance and the command
    assert back["gen_id"] == GEN_ID_RELATIVE + "_nofactored_cosine" == prov["lopt"]["gen_id"]
    assert prov["lopt"]["relative_correction"] is True and prov["lopt"]["step_decay"] == "cosine"
    assert "--no-factored-features" in prov["command"] and "--step-decay cosine" in prov["command"]
    assert prov["lopt"]["factored_features"] is False
    assert sorted(p.name for p in (run / "thetas").iterdir()) == [
        "theta_000001.msgpack",
        "theta_000002.msgpack",
    ]
    # the provenance's command re-creates θ byte for byte (same machine, same commit)
    again = tmp_path / "again"
    args = shlex.split(prov["command"])[1:]
    args[args.index("--out") + 1] = str(again)
    assert main([*args, "--quiet"]) == 0
    assert (again / "theta.msgpack").read_bytes() == (run / "theta.msgpack").read_bytes()


def test_truncated_es_end_to_end_lowers_the_objective(tmp_path):
    """`estimator="es"` meta-trains: θ after 60 outer steps beats the initial θ on
    the whole-run objective of 64 task instances that training never drew."""
    from hubopt.learned.meta.estimators import Unroll

    cfg = MetaTrainConfig(
        outer_steps=60,
        estimator="es",
        **{**TINY, "num_pairs": 8, "horizons": (20,), "meta_lr": 3e-2, "checkpoint_every": 30},
    )
    res = meta_train(cfg, tmp_path, progress=False)
    assert res.step == 60 and len(res.log) == 60
    unroll = Unroll(td.TINY_TASKS[0], cfg.lopt(), trunc_len=5, horizons=(20,))
    objective = jax.jit(jax.vmap(lambda th, k: unroll.full_objective(th, k, {}), in_axes=(None, 0)))
    keys = jax.random.split(jax.random.PRNGKey(777), 64)
    theta0 = cfg.lopt().init(jax.random.split(jax.random.PRNGKey(0), 3)[0])
    before, after = float(objective(theta0, keys).mean()), float(objective(res.theta, keys).mean())
    assert np.isfinite(after) and after < before - 1.0, (before, after)


if __name__ == "__main__":  # python tests/test_meta_train.py --write-golden
    if sys.argv[1:] != ["--write-golden"]:
        sys.exit("usage: python tests/test_meta_train.py --write-golden")
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        res = meta_train(PINNED, d, progress=False)
        sha = hashlib.sha256((Path(d) / "theta.msgpack").read_bytes()).hexdigest()
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(
        json.dumps(
            {
                "config": PINNED.to_json(),
                "theta": [float(x) for x in _flat(res.theta)],
                "meta_loss": [float(np.mean(r["meta_loss"])) for r in res.log],
                "theta_sha256": sha,
                "made_on": f"{platform.machine()}, jax {jax.__version__}",
                "made_by": "python tests/test_meta_train.py --write-golden",
            },
            indent=1,
        )
        + "\n"
    )
