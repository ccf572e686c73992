"""The benchmark scripts run end to end on a tiny setting (their numbers live in
BENCHMARKS.md; here only that they run and write their records)."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import learned_step  # noqa: E402


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


def test_learned_step_times_several_theta_files_side_by_side(tmp_path):
    """Repeated --theta: each file's variant as theta_<stem>; its state is its momenta and
    v̂ (4 B each per parameter) plus a float per tensor for the anchor floor's peak."""
    import jax
    import numpy as np

    from hubopt.learned.checkpoint import write_checkpoint
    from hubopt.learned.small_lopt.architecture import MLPLOpt, momentum_set

    paths = []
    for k in (2, 1):
        lo = MLPLOpt(
            hidden_sizes=(4,), factored_features=False, anchor_floor=True, **momentum_set(k)
        )
        theta = jax.tree_util.tree_map(np.asarray, lo.init(jax.random.key(0)))
        paths += [
            "--theta",
            str(write_checkpoint(tmp_path / f"m{k}.msgpack", theta, gen_id=lo.gen_id)),
        ]
    rec = learned_step.main(
        ["--steps", "2", "--warmup", "0", "--optimizers", "adam", "--no-hub-theta", *paths]
    )
    assert 12.0 <= rec["theta_m2_state_bytes_per_param"] < 12.01
    assert 8.0 <= rec["theta_m1_state_bytes_per_param"] < 8.01
    assert rec["theta_m1_ratio_median"] > 0 and "hub_theta_m1_median_ms" not in rec


def test_compile_time_measures_each_contender_in_a_fresh_process(tmp_path):
    import compile_time

    out = tmp_path / "compile.md"
    compile_time.main(
        ["--repeats", "1", "--models", "mlp", "--contenders", "hub_adamax", "--markdown", str(out)]
    )
    rows = [line.split("|") for line in out.read_text().splitlines() if line.startswith("| mlp")]
    assert [r[2].strip() for r in rows] == ["adam", "hub_adamax"]  # Adam joins as the reference
    assert rows[0][4].strip() == "1.0×"
    kernels = {r[2].strip(): int(r[5]) for r in rows}
    assert kernels["hub_adamax"] > kernels["adam"] > 0  # HUB's σ, mixing and diagnostics


def test_compile_times_cnn_is_the_stated_model_and_diagnostics_cost_kernels():
    import compile_time
    import jax

    params, loss_fn = compile_time._cnn()
    leaves = jax.tree_util.tree_leaves(params)
    assert (len(leaves), sum(x.size for x in leaves)) == (8, 1_025_866)  # as its docstring says
    assert np.isfinite(float(loss_fn(params)))
    on, off = (compile_time.measure_one("cnn", c) for c in ("hub_small", "hub_small_nostats"))
    assert off["kernels"] < on["kernels"]  # stats=False skips the diagnostics' reductions


def test_memory_hubs_state_is_its_members_plus_a_few_floats_per_tensor():
    import memory

    rows = {
        r["contender"]: r
        for r in memory.main(["--widths", "64", "--contenders", "adam,small,hub_small"])
    }
    n = rows["adam"]["params"]
    assert rows["adam"]["state_bytes_per_param"] * n == pytest.approx(8 * n + 4, abs=4)
    extra = (
        rows["hub_small"]["state_bytes_per_param"]
        - rows["small"]["state_bytes_per_param"]
        - rows["adam"]["state_bytes_per_param"]
    ) * n
    # HUB's own state: its step count and four diagnostics per tensor (6 tensors)
    assert extra == pytest.approx(4 + 6 * 4 * 4, abs=1e-3)
    assert all(r["temp_mb"] >= 0 and r["argument_mb"] > 0 for r in rows.values())


def _record(label, spec, train, test_loss, test_acc, valid, spike_curve=None):
    curve = spike_curve or [2.0, 1.0, train]
    return {
        "task": {"name": "wine_mlp16tanhb16", "metric": "loss", "metric_split": "train"},
        "optimizer": {"label": label, "spec": spec},
        "hyperparameters": {"learning_rate": spec.get("learning_rate")},
        "seed": 0,
        "num_steps": 100,
        "metrics": {
            "train": {"loss": train},
            "valid": {"loss": valid},
            "test": {"loss": test_loss, "accuracy": test_acc},
        },
        "first_nonfinite_step": None,
        "final_loss": valid,
        "timing": {"step_time_s": 1e-4},
        "curve": {"step": [0], "loss": [2.0]},
        "eval": {"step": [0, 50, 100], "loss": [2.0, 1.0, valid], "train": {"loss": curve}},
    }


def test_lopt_goals_by_hand():
    """One task: the learned optimizer's training loss is half tuned Adam's (met), its test
    accuracy 1 point lower (missed), test loss 1.2× (met), one spike of (0.5 + ε)/(0.01 + ε)
    (missed), and HUB lands between its parents (met)."""
    import lopt_goals

    def adam(lr, schedule="warmup_cosine"):
        return {"name": "adam", "learning_rate": lr, "schedule": schedule}

    recs = [
        _record("adam@0.001+warmup_cosine", adam(1e-3), 0.02, 0.30, 0.90, 0.25),
        _record("adam@0.01+warmup_cosine", adam(1e-2), 0.01, 0.50, 0.95, 0.40),
        _record("adam@0.001", adam(1e-3, None), 0.04, 0.30, 0.90, 0.30),
        _record("small", {"name": "small"}, 0.01, 0.36, 0.89, 0.3, [2, 0.01, 0.5, 0.01]),
        _record(
            "hub(adam@0.001+warmup_cosine | small)",
            {"name": "hub", "hand": adam(1e-3), "learned": {"name": "small"}},
            0.015,
            0.3,
            0.9,
            0.3,
        ),
    ]
    recs[3]["eval"]["step"] = [0, 50, 70, 100]
    recs[3]["eval"]["loss"] = [2.0, 1.0, 0.5, 0.3]
    got = {goal: (met, evidence) for goal, met, evidence in lopt_goals.goals(recs)}
    # tuned on valid: rate 1e-3 (valid 0.25 < 0.40), train loss 0.02
    assert got["loss ≤ 1.0× tuned Adam+cosine (geo. mean)"][0] is True
    assert "0.5×" in got["loss ≤ 1.0× tuned Adam+cosine (geo. mean)"][1]
    assert got["beats Adam(1e-3) on ≥ 90% of tasks"] == (True, "1 of 1")
    assert got["test accuracy within 0.5 points of tuned"][0] is False
    assert "-1.00" in got["test accuracy within 0.5 points of tuned"][1]
    assert got["test loss ≤ 1.5× tuned"] == (True, "ratios: 1.20")
    assert got["no divergence, spike ratio ≤ 3"][0] is False
    assert f"{(0.5 + 2e-3) / (0.01 + 2e-3):.3g}" in got["no divergence, spike ratio ≤ 3"][1]
    assert got["HUB never below the worse parent"][0] is True


def test_spike_variants_runs_each_variant(capsys):
    import spike_variants

    assert (
        spike_variants.main(
            ["--steps", "20", "--tasks", "wine_mlp16tanhb16", "--variants", "shipped,relative"]
        )
        == 0
    )
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| wine")]
    assert [r.split("|")[2].strip() for r in rows] == ["shipped", "relative"]
    with pytest.raises(SystemExit):
        spike_variants.main(["--variants", "nope"])


def test_step_time_times_hub_lgl2o_and_every_rule_side_by_side(tmp_path):
    import step_time

    from hubopt import SIGMA_RULES

    out, md = tmp_path / "r.json", tmp_path / "r.md"
    argv = ["--learned", "adamax", "--rounds", "1", "--iters", "1", "--widths", "16,8,4"]
    assert step_time.main([*argv, "--json", str(out), "--markdown", str(md)]) == 0
    rec = json.loads(out.read_text())
    assert rec["n_params"] == 16 * 8 + 8 + 8 * 4 + 4
    rules = {f"hub_{r}" for r in SIGMA_RULES if r != "softmax"}
    for kind in ("update", "step"):
        res = rec["results"][kind]
        parts = {"blend_half", "hub_half"}  # what HUB's extra time is made of
        assert {"hand", "learned", "hub", "hub_nostats", "lgl2o", *parts, *rules} <= set(
            res["median_ms"]
        )
        assert all(t > 0 for t in res["median_ms"].values())
        assert res["median_ratios"]["hub_over_lgl2o"] > 0
    assert "**t(HUB) / t(LGL2O)**" in md.read_text() and "MLP 16-8-4" in md.read_text()
    assert rec["donate"] is False and "no buffer donation" in md.read_text()
    # with donated buffers every contender still runs its rounds (a donated buffer is
    # never used again)
    assert step_time.main([*argv, "--donate", "--json", str(out), "--markdown", str(md)]) == 0
    rec = json.loads(out.read_text())
    assert rec["donate"] is True and "donated to each call" in md.read_text()
    assert all(t > 0 for t in rec["results"]["step"]["median_ms"].values())
    with pytest.raises(SystemExit):
        step_time.main(["--widths", "16"])
    # a chosen few rules: only those beside softmax HUB
    assert step_time.main([*argv, "--rules", "hyper_floor", "--json", str(out)]) == 0
    timed = set(json.loads(out.read_text())["results"]["step"]["median_ms"])
    assert {n for n in timed if n.startswith("hub_") and n not in ("hub_cheap", "hub_half")} == {
        "hub_nostats",
        "hub_hyper_floor",
    }
    with pytest.raises(SystemExit):
        step_time.main([*argv, "--rules", "nope"])
