"""The benchmark scripts run end to end on a tiny setting (their numbers live in
BENCHMARKS.md; here only that they run and write their records)."""

import json
import sys
from pathlib import Path

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
