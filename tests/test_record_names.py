"""Records written before the bundled learned optimizer had one name ("small") read with
today's names, and a sweep finds them under their old file names (`records.upgrade_names`,
`records.legacy_label`, `runner.existing_record_path`)."""

import copy
import json

import pytest

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


def test_a_run_of_a_theta_no_longer_shipped_is_its_own_optimizer_and_is_not_reused(tmp_path):
    """A bundled θ replaced by a new one: its runs read as "small@<hash>" (spec, label,
    learned slot), so no table mixes them with the shipped θ's and a sweep refuses to take
    one for a run of the shipped θ; a record without a hash ran UNHASHED_SMALL_SHA256."""
    point = sweep.Point("nonconvex_l1cos", "hub:adam+small", 0, "tiny", steps=3)
    (path,) = sweep.run_sweep([point], str(tmp_path / "runs"))
    raw = json.loads(open(path).read())
    shipped = raw["optimizer"]["learned"]["theta_sha256"]
    assert records.read(path)["optimizer"]["label"] == "hub(adam@0.001 | small)"  # shipped

    def mark(record, shipped_sha256):
        return records.mark_unshipped_theta(copy.deepcopy(record), shipped_sha256)

    other = "f" * 64  # as if a new θ had shipped since the run
    old = mark(raw, other)["optimizer"]
    tag = f"small@{shipped[:8]}"
    assert old["label"] == f"hub(adam@0.001 | {tag})"
    assert (
        old["spec"]["learned"] == {"name": tag}
        and old["spec"]["hand"] == (raw["optimizer"]["spec"]["hand"])
    )
    assert old["learned"]["label"] == tag
    assert records.spec_key(old["spec"]) != records.spec_key(raw["optimizer"]["spec"])
    assert mark(raw, shipped) == raw  # the shipped θ's runs keep their names

    alone = copy.deepcopy(raw)
    alone["optimizer"]["spec"] = {"name": "small"}
    alone["optimizer"]["label"] = "small"
    assert mark(alone, other)["optimizer"]["spec"] == {"name": tag}

    unhashed = copy.deepcopy(raw)
    del unhashed["optimizer"]["learned"]["theta_sha256"]
    assert mark(unhashed, records.UNHASHED_SMALL_SHA256) == unhashed
    assert mark(unhashed, other)["optimizer"]["label"].endswith(
        f"small@{records.UNHASHED_SMALL_SHA256[:8]})"
    )

    # a sweep does not reuse a run of another θ: the record stays, the run is refused
    written = copy.deepcopy(raw)  # the same run, but of an older θ
    written["optimizer"]["learned"]["theta_sha256"] = "0" * 64
    older = tmp_path / "older"
    older.mkdir()
    target = older / path.split("/")[-1]
    target.write_text(records.dumps(written))
    before = target.read_text()
    with pytest.raises(FileExistsError, match="already exists"):
        sweep.run_sweep([point], str(older))
    assert target.read_text() == before


def test_the_unhashed_records_predate_the_first_hashed_ones_which_ran_that_theta():
    """UNHASHED_SMALL_SHA256 is tied to the records themselves: every committed record of
    the bundled optimizer without a hash is older than the first one with a hash, and
    that first one ran the θ UNHASHED_SMALL_SHA256 names."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "benchmarks" / "records"
    hashed, unhashed = [], []
    for p in root.rglob("*.json"):
        rec = json.loads(p.read_text())
        learned = rec.get("optimizer", {}).get("learned") if isinstance(rec, dict) else None
        if isinstance(learned, dict) and learned.get("kind") in ("small", "pretrained"):
            date = rec["meta"]["date"]
            if "theta_sha256" in learned:
                hashed.append((date, learned["theta_sha256"]))
            else:
                unhashed.append(date)
    first_date, first_hash = min(hashed)
    assert first_hash == records.UNHASHED_SMALL_SHA256
    assert unhashed and max(unhashed) < first_date
