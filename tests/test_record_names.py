"""Records written before the bundled learned optimizer had one name ("small") read with
today's names, and a sweep finds them under their old file names (`records.upgrade_names`,
`records.legacy_label`, `runner.existing_record_path`)."""

import copy
import json

from hubopt.bench import records, runner, sweep


def _old_form(record: dict) -> dict:
    """`record` as hubopt wrote it before the rename, built by hand from today's."""
    old = copy.deepcopy(record)
    opt = old["optimizer"]
    opt["label"] = opt["label"].replace("| small)", "| hubopt-small)")
    opt["spec"]["learned"] = {"name": "pretrained", "size": "small"}
    opt["learned"]["kind"] = "pretrained"
    opt["learned"]["label"] = "hubopt-small"
    old["hyperparameters"]["learned.name"] = "pretrained"
    old["hyperparameters"]["learned.size"] = "small"
    return old


def test_an_old_record_reads_as_todays_and_a_sweep_reuses_it(tmp_path):
    point = sweep.Point("nonconvex_l1cos", "hub:adam+small", 0, "tiny", steps=3)
    fresh = tmp_path / "fresh"
    (path,) = sweep.run_sweep([point], str(fresh))
    today = records.read(path)
    assert today["optimizer"]["label"] == "hub(adam@0.001 | small)"
    assert today["optimizer"]["spec"]["learned"] == {"name": "small"}
    assert today["optimizer"]["learned"]["kind"] == "small"

    # the same run as an old version wrote it, under its old file name
    old = _old_form(json.loads((fresh / path.split("/")[-1]).read_text()))
    old_dir = tmp_path / "old"
    old_path = runner.record_path(old_dir, "nonconvex_l1cos", "hub(adam@0.001 | hubopt-small)", 0)
    assert old_path.name == "nonconvex_l1cos__hub-adam-0.001-hubopt-small__seed0.json"
    records.write(old, old_path)
    assert records.read(old_path) == today  # every field with today's names

    # a sweep asked for the run finds and keeps the old file: no rerun, no second record
    (again,) = sweep.run_sweep([point], str(old_dir))
    assert again == str(old_path)
    assert sorted(p.name for p in old_dir.glob("*.json")) == [old_path.name]
    assert json.loads(old_path.read_text()) == json.loads(json.dumps(old))  # left as it was


def test_the_old_label_is_found_token_by_token():
    assert records.legacy_label("small") == "hubopt-small"
    assert records.legacy_label("hub[sigma=rank](adam@0.01 | small)") == (
        "hub[sigma=rank](adam@0.01 | hubopt-small)"
    )
    # a θ file's path is not the bundled optimizer, whatever its folder is called
    assert records.legacy_label("theta(runs/small/small.msgpack)") == (
        "theta(runs/small/small.msgpack)"
    )
    assert records.legacy_label("adam@0.001") == "adam@0.001"


def test_upgrading_leaves_other_optimizers_alone():
    rec = {
        "optimizer": {
            "label": "hub(adam@0.01 | velo)",
            "spec": {"name": "hub", "hand": {"name": "adam"}, "learned": {"name": "velo"}},
            "learned": {"kind": "velo", "label": "velo"},
        },
        "hyperparameters": {"learned.name": "velo", "hand.name": "adam"},
    }
    assert records.upgrade_names(copy.deepcopy(rec)) == rec
