"""Turn a finished `hubopt meta-train` run into a bundled optimizer.

    python -m hubopt.learned.meta.export RUN_DIR hubopt/learned/small_lopt/weights/small

writes `small.msgpack` (θ, copied through the checkpoint reader/writer from the
snapshot `hubopt meta-select` chose, or else from the run's final theta.msgpack)
and `small.provenance.json` (from the run's config.json, run_info.json,
log.jsonl and selection.json): the commands that re-create it, seed, git hash,
wall time, machine, the meta-loss curve summary and the selection's scores.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import numpy as np

from hubopt._src.atomic_write import write_atomic
from hubopt.learned.checkpoint import read_checkpoint, write_checkpoint
from hubopt.learned.meta.train import MetaTrainConfig


def reproduce_command(config: MetaTrainConfig, out: str = "runs/small") -> str:
    """The `hubopt meta-train` command line that re-creates `config` exactly."""
    default = MetaTrainConfig()
    args = ["hubopt", "meta-train", "--out", out]
    for field, value in config.to_json().items():
        if field == "outer_steps" or value != default.to_json()[field]:
            flag = "--" + field.replace("_", "-")
            if isinstance(value, bool):
                args.append(flag if value else "--no-" + field.replace("_", "-"))
                continue
            if isinstance(value, list):
                value = ",".join(str(v) for v in value)
            args += [flag, str(value)]
    return shlex.join(args)


def export_bundle(run_dir, dest_stem, *, notes: str = "") -> dict:
    run = Path(run_dir)
    dest = Path(dest_stem)
    config = MetaTrainConfig.from_json(json.loads((run / "config.json").read_text()))
    info = json.loads((run / "run_info.json").read_text())
    log = [json.loads(s) for s in (run / "log.jsonl").read_text().splitlines() if s.strip()]
    run_steps = int(read_checkpoint(run / "theta.msgpack")["step"])
    # the θ that `hubopt meta-select` chose among the run's snapshots, if it ran
    selection = None
    if (run / "selection.json").exists():
        selection = json.loads((run / "selection.json").read_text())
    theta_file = run / "thetas" / selection["chosen"] if selection else run / "theta.msgpack"
    ck = read_checkpoint(theta_file)
    step = int(ck["step"])
    config = MetaTrainConfig.from_json({**config.to_json(), "outer_steps": run_steps})
    losses = np.asarray([np.mean(r["meta_loss"]) for r in log[:run_steps]], float)
    n = max(1, len(losses) // 10)
    prov = {
        "name": dest.name,
        "command": reproduce_command(config),
        "seed": config.seed,
        "git_hash": info["sessions"][-1]["git_hash"],
        "git_hashes_of_sessions": [s["git_hash"] for s in info["sessions"]],
        "commands_run": [s["command"] for s in info["sessions"]],
        "wall_s": info["total_wall_s"],
        "outer_steps": step,
        "run_outer_steps": run_steps,
        "machine": info.get("machine"),
        "versions": info.get("versions"),
        "config": config.to_json(),
        "lopt": {
            "class": "hubopt.learned.small_lopt.architecture.MLPLOpt",
            "hidden_sizes": list(config.hidden),
            "relative_correction": config.relative_correction,
            "factored_features": config.factored_features,
            "step_decay": config.step_decay,
            "anchor_floor": config.anchor_floor,
            "momentum_decays": list(config.lopt().momentum_decays),
            "gen_id": config.lopt().gen_id,
        },
        "meta_loss": {
            "what": "mean over each outer step's tasks of the truncation meta-loss "
            "(mean log training loss + held-out log loss term); by tenths of training",
            "by_tenth": [float(losses[i : i + n].mean()) for i in range(0, len(losses), n)][:10],
            "first_tenth": float(losses[:n].mean()),
            "last_tenth": float(losses[-n:].mean()),
        },
        "notes": notes,
    }
    if selection:
        prov["selection"] = {
            "command": f"hubopt meta-select {run}",
            "chosen": selection["chosen"],
            "chosen_was_eligible": selection["chosen_was_eligible"],
            "settings": selection["settings"],
            "candidates": {
                name: {k: c[k] for k in ("score", "worst_spike", "eligible")}
                for name, c in selection["candidates"].items()
            },
        }
    dest.parent.mkdir(parents=True, exist_ok=True)
    write_checkpoint(
        dest.with_suffix(".msgpack"), ck["params"], gen_id=config.lopt().gen_id, step=step
    )
    write_atomic(dest.with_name(dest.name + ".provenance.json"), json.dumps(prov, indent=1) + "\n")
    return prov


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        print("usage: python -m hubopt.learned.meta.export RUN_DIR DEST_STEM [NOTES]")
        sys.exit(2)
    print(json.dumps(export_bundle(*sys.argv[1:3], notes=" ".join(sys.argv[3:])), indent=1))
