"""The benchmark scripts run end to end on a tiny setting (their numbers live in
BENCHMARKS.md; here only that they run, write their records and read them back)."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import learned_step  # noqa: E402
import lopt_quality  # noqa: E402


def test_lopt_quality_records_table_and_compare(tmp_path, capsys):
    out = tmp_path / "rec"
    task = "synreg_mlp48gelub32"
    argv = ["--out", str(out), "--tasks", task, "--steps", "20", "--seeds", "1"]
    assert lopt_quality.main([*argv, "--contenders", "adam_grid,lopt,hub_default"]) == 0
    names = sorted(p.name for p in out.glob("*.json"))
    assert names == [f"{task}__{c}.json" for c in ("adam_grid", "hub_default", "lopt")]
    rec = json.loads((out / f"{task}__lopt.json").read_text())
    assert rec["steps"] == 20 and len(rec["train_loss"]) == 1 and rec["theta"] == "bundled"
    capsys.readouterr()
    (out / "theta.provenance.json").write_text('{"name": "small"}')  # not a record
    assert lopt_quality.main(["--table", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"| {task} | in_distribution |" in text and "geometric mean" in text
    # the same records on both sides: every comparison is a tie, a win for neither
    assert lopt_quality.main(["--compare", str(out), str(out)]) == 0
    text = capsys.readouterr().out
    assert "lower final training loss on 0/1, the lower held-out loss on 0/1" in text
    # θ compiled in as a constant: the same function (other rounding only)
    out_c = tmp_path / "rec_constant"
    argv_c = ["--out", str(out_c), "--tasks", task, "--steps", "20", "--seeds", "1"]
    assert lopt_quality.main([*argv_c, "--contenders", "lopt", "--theta-constant"]) == 0
    rec_c = json.loads((out_c / f"{task}__lopt.json").read_text())
    assert rec_c["theta_compiled_in"] is True and rec["theta_compiled_in"] is False
    np.testing.assert_allclose(rec_c["train_loss"], rec["train_loss"], rtol=1e-3)
    capsys.readouterr()
    # an existing record is kept unless --overwrite
    before = (out / f"{task}__lopt.json").read_text()
    assert lopt_quality.main([*argv, "--contenders", "lopt"]) == 0
    assert (out / f"{task}__lopt.json").read_text() == before
    assert "skip" in capsys.readouterr().out


def test_learned_step_times_every_contender(tmp_path):
    rec = learned_step.main(
        ["--steps", "2", "--warmup", "0", "--optimizers", "small", "--out", str(tmp_path / "r")]
    )
    assert rec["n_params"] == 1_068_810
    assert rec["small_ratio_median"] > 0 and rec["adam_median_ms"] > 0
    # state: 3 momenta + v̂ (16 B) + factored rows/cols; Adam: 2 floats (8 B)
    assert 16.0 <= rec["small_state_bytes_per_param"] < 16.1
    assert rec["adam_state_bytes_per_param"] == pytest.approx(8.0, abs=1e-4)
    assert json.loads((tmp_path / "r").read_text())["benchmark"] == "learned_step"
    with pytest.raises(SystemExit):
        learned_step.main(["--optimizers", "sgd"])


def test_a_later_folder_relabels_a_rows_kind_and_a_zero_loss_is_scored(tmp_path):
    # kinds follow the training distribution of the θ under test: the old
    # folder's Adam record says "out_of_distribution", the new θ's record
    # "in_distribution"; the row takes the later folder's kind
    def record(folder, contender, kind, train, **extra):
        folder.mkdir(exist_ok=True)
        rec = {
            "command": "x",
            "git_hash": "0" * 40,
            "theta": "t",
            "steps": 10,
            "seeds": 2,
            "machine": "m",
            "versions": {"jax": "j"},
            "task": "digits_cnn8x16relub64",
            "kind": kind,
            "contender": contender,
            "train_loss": train,
            **{
                k: [[v, v]] * len(train) if isinstance(train[0], list) else [v, v]
                for k, v in (("eval_loss", 0.5), ("accuracy", 0.9), ("initial_loss", 2.3))
            },
            **extra,
        }
        (folder / f"digits_cnn8x16relub64__{contender}.json").write_text(json.dumps(rec))

    lrs = list(lopt_quality.ADAM_GRID)
    grid = [[0.1, 0.1] if lr == 1e-3 else [0.01, 0.01] for lr in lrs]
    record(tmp_path / "old", "adam_grid", "out_of_distribution", grid, learning_rates=lrs)
    record(tmp_path / "new", "lopt", "in_distribution", [0.0, 0.0])
    text = lopt_quality.table(str(tmp_path / "old"), str(tmp_path / "new"))
    assert "| digits_cnn8x16relub64 | in_distribution |" in text
    assert "< Adam(1e-3)'s on 1/1 tasks" in text
    # a training loss of exactly 0 gives a geometric mean of 0
    assert "tuned-Adam final training loss = 0.00" in text
