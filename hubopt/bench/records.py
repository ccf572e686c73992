"""Run records: one JSON file per run, written atomically, never clobbered silently.

A record (schema `hubopt.run/1`) holds everything a table or figure needs, so
reports are made from records on disk only:

    schema         "hubopt.run/1"
    task           {"name", "num_steps" (recommended), "description"; since the task
                    contract has sizes: "size", "metric", "higher_is_better"; newer:
                    "metric_split", the split tables report, "test" when absent}
    optimizer      {"label": legend text, "spec": the dict the optimizer was built
                    from (`hubopt.bench.optimizers`), "learned": what filled the
                    learned slot (its kind, label, and the checkpoint's SHA-256:
                    "theta_sha256" of a bundled θ or of a θ file, with
                    "theta_path" for the file; "sha256" of VeLO's), or null}
    seed           int
    num_steps      int, steps actually run
    hyperparameters {...} (flat summary of the spec: learning rates, mode, ...)
    curve          {"step": [...], "loss": [...], "loss_mean": [...]}: the training
                   loss at `step` (of the params before that step's update) and its
                   mean over the steps since the previous point (subsampled)
    eval           {"step": [...], "loss": [...]}: untimed evaluations of the valid
                   loss; "valid": {metric: [...]}, the task's valid metrics at the
                   same steps (newer records); "train": {"loss": [...]}, the whole
                   training split's loss at the same steps, for a task whose
                   metric_split is "train" (newer records; its spike ratio)
    first_nonfinite_step  the first step whose training loss was NaN or infinite
                   (the run is kept, not dropped), or null (newer records)
    best_loss, best_step, final_loss   best over every step and evaluation of a
                   deterministic task, over the evaluations of a stochastic one;
                   final = evaluation of the params after the last step
    metrics        {"valid": {...}, "test": {...}}: the task's own metrics (its
                   `evaluate`) of the final params on the splits it has (and
                   "train" where that is the task's metric_split); optional in
                   older records. Test numbers are for reporting only.
    timing         {"step_time_s": median seconds per step over timed chunks,
                    "step_time_stats_s": {"mean", "min", "max", "chunks"} (newer),
                    "compile_time_s": compiling the training chunks (the task's
                    evaluations compile on first use, once per task and process),
                    "wall_time_s": whole run incl. compile and eval}
    diagnostics    optimizer statistics at the end (HUB σ / hand share, LGL2O wins)
    diagnostics_curve  [{"step", ...the same statistics}] at every evaluation (newer)
    sigma_histograms   HUB runs (newer): {"edges": σ bin edges, "steps": the evaluation
                   steps nearest 0, 10 and 50 % of the run and its last step (in older
                   records the step after it, num_steps), "counts": {tensor
                   path: [counts per bin, one list per step]}}: how many entries of
                   each tensor had σ in each bin (`hubopt.sigma_histogram`); else null
    meta           {"versions", "platform", "device", "git", "date", "command"; newer:
                    "cuda_visible_devices" and "xla_flags" where the run's process
                    had them set}

Non-finite losses (a diverged run) are kept as JSON NaN / Infinity, which
Python's json reads back.

Old names. Records written before hubopt's bundled learned optimizer had one name,
"small", call it `{"name": "pretrained", "size": "small"}` in specs, "hubopt-small"
in labels and file names and "pretrained" as the learned slot's kind. `read` gives
them today's names (`upgrade_names`), so that every table, choice and resumed sweep
sees one optimizer; the files on disk are left as they are (`legacy_label` is the
file-name form a run of it had then).
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
from pathlib import Path
from typing import Any

from hubopt._src.atomic_write import write_atomic

SCHEMA = "hubopt.run/1"


class RecordError(ValueError):
    """A record that cannot be read or does not follow the schema."""


_TOP_LEVEL = {
    "schema": str,
    "task": dict,
    "optimizer": dict,
    "seed": int,
    "num_steps": int,
    "hyperparameters": dict,
    "curve": dict,
    "eval": dict,
    "best_loss": (int, float),
    "best_step": int,
    "final_loss": (int, float),
    "timing": dict,
    "diagnostics": dict,
    "meta": dict,
}


def _is_number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def validate(record: Any, where: str = "record") -> dict:
    """Returns `record` if it follows the schema, else raises `RecordError` naming the problem."""
    if not isinstance(record, dict):
        raise RecordError(f"{where}: a record must be a JSON object, got {type(record).__name__}")
    if record.get("schema") != SCHEMA:
        raise RecordError(f"{where}: schema must be {SCHEMA!r}, got {record.get('schema')!r}")
    for key, kind in _TOP_LEVEL.items():
        if key not in record:
            raise RecordError(f"{where}: missing field {key!r}")
        value = record[key]
        ok = (
            _is_number(value)
            if kind == (int, float)
            else (isinstance(value, kind) and not (kind is int and isinstance(value, bool)))
        )
        if not ok:
            raise RecordError(f"{where}: field {key!r} has the wrong type {type(value).__name__}")
    if not isinstance(record["task"].get("name"), str):
        raise RecordError(f"{where}: task.name must be a string")
    if not isinstance(record["optimizer"].get("label"), str):
        raise RecordError(f"{where}: optimizer.label must be a string")
    if not isinstance(record["optimizer"].get("spec"), dict):
        raise RecordError(f"{where}: optimizer.spec must be an object")
    if record["num_steps"] < 1:
        raise RecordError(f"{where}: num_steps must be >= 1, got {record['num_steps']}")
    for name, fields in (("curve", ("step", "loss", "loss_mean")), ("eval", ("step", "loss"))):
        series = record[name]
        lengths = set()
        for field in fields:
            values = series.get(field)
            if not isinstance(values, list):
                raise RecordError(f"{where}: {name}.{field} must be a list")
            if not all(_is_number(v) for v in values):
                raise RecordError(f"{where}: {name}.{field} must hold numbers only")
            lengths.add(len(values))
        if len(lengths) != 1:
            raise RecordError(f"{where}: the lists of {name} differ in length: {sorted(lengths)}")
        steps = series["step"]
        if any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
            raise RecordError(f"{where}: {name}.step must increase strictly")
        if steps and not (0 <= steps[0] and steps[-1] <= record["num_steps"]):
            raise RecordError(f"{where}: {name}.step must lie in [0, num_steps]")
    if not record["curve"]["step"]:
        raise RecordError(f"{where}: curve is empty")
    if not (
        math.isnan(record["best_loss"])
        or record["best_loss"] <= record["final_loss"]
        or math.isnan(record["final_loss"])
    ):
        raise RecordError(
            f"{where}: best_loss {record['best_loss']} exceeds final_loss {record['final_loss']}"
        )
    return record


SMALL = "small"  # the bundled learned optimizer's one name
_OLD_SMALL_LABEL = re.compile(r"\bhubopt-small\b")
_SMALL_TOKEN = re.compile(r"(?<![\w/.-])small(?![\w/.-])")


def _upgrade_spec(spec):
    if isinstance(spec, dict):
        if spec.get("name") == "pretrained" and spec.get("size", SMALL) == SMALL:
            return {k: v for k, v in spec.items() if k != "size"} | {"name": SMALL}
        return {k: _upgrade_spec(v) for k, v in spec.items()}
    return spec


def upgrade_names(record: dict) -> dict:
    """`record` with today's name of the bundled learned optimizer ("small") where it was
    written with the old ones (module docstring): in the optimizer's spec, label and
    learned slot, and the flat hyperparameters. Nothing else changes; `meta.command`
    stays as it was run."""
    opt = record["optimizer"]
    opt["spec"] = _upgrade_spec(opt["spec"])
    opt["label"] = _OLD_SMALL_LABEL.sub(SMALL, opt["label"])
    learned = opt.get("learned")
    if isinstance(learned, dict) and learned.get("kind") == "pretrained":
        learned["kind"] = SMALL
        if isinstance(learned.get("label"), str):
            learned["label"] = _OLD_SMALL_LABEL.sub(SMALL, learned["label"])
    flat = record["hyperparameters"]
    for key in [k for k, v in flat.items() if k.endswith("name") and v == "pretrained"]:
        prefix = key[: -len("name")]
        if flat.get(prefix + "size", SMALL) == SMALL:
            flat[key] = SMALL
            flat.pop(prefix + "size", None)
    return record


# Records written before runs named their θ by hash (2026-12-01 and 2026-12-02) all ran
# the bundled θ of git e3ed02e (2026-11-29), whose file did not change until this hash
# was recorded: they count as runs of it.
UNHASHED_SMALL_SHA256 = "098c316fac7621793863ce7667f29c4d42cd150aa2cb129d94d7f9883d574b6a"


@functools.cache
def _shipped_small_sha256() -> str:
    from hubopt.learned.small_lopt.bundled import theta_sha256

    return theta_sha256(SMALL)


def _rename_small(spec, name: str):
    if isinstance(spec, dict):
        if spec.get("name") == SMALL:
            return spec | {"name": name}
        return {k: _rename_small(v, name) for k, v in spec.items()}
    return spec


def mark_unshipped_theta(record: dict, shipped_sha256: str | None = None) -> dict:
    """`record` with its bundled learned optimizer renamed "small@<8 hex digits of its θ's
    SHA-256>" where that θ is not the one shipped now (`shipped_sha256`, by default the
    SHA-256 of the package's `small` θ file): in the spec, the label and the learned slot.

    A run of another θ is another optimizer: so no table puts it beside or in place of
    runs of the shipped one, a sweep does not reuse it for a run of the shipped one, and
    `hubopt.bench.optimizers` cannot rebuild it. A record without a hash ran the θ of
    `UNHASHED_SMALL_SHA256`."""
    opt = record["optimizer"]
    learned = opt.get("learned")
    if not (isinstance(learned, dict) and learned.get("kind") == SMALL):
        return record
    ran = learned.get("theta_sha256", UNHASHED_SMALL_SHA256)
    if ran == (shipped_sha256 or _shipped_small_sha256()):
        return record
    name = f"{SMALL}@{ran[:8]}"
    opt["spec"] = _rename_small(opt["spec"], name)
    opt["label"] = _SMALL_TOKEN.sub(name, opt["label"])
    learned["label"] = _SMALL_TOKEN.sub(name, str(learned.get("label", SMALL)))
    return record


def legacy_label(label: str) -> str:
    """The label a run of `label` had before the bundled optimizer was named "small"
    ("hub(adam@0.01 | small)" -> "hub(adam@0.01 | hubopt-small)"): where its record file
    was written then."""
    return _SMALL_TOKEN.sub("hubopt-small", label)


def spec_key(spec: dict) -> str:
    """An optimizer spec (a record's `optimizer.spec`) as one comparable string: its
    JSON with sorted keys."""
    return json.dumps(spec, sort_keys=True)


def family_key(spec: dict) -> str:
    """`spec_key` of the spec without its learning rate: the runs of one tuning grid
    share it."""
    return spec_key({k: v for k, v in spec.items() if k != "learning_rate"})


def dumps(record: dict) -> str:
    """The record as JSON text (validated first)."""
    validate(record)
    return json.dumps(record, indent=1, sort_keys=True) + "\n"


def write(record: dict, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Writes `record` to `path` atomically (temp file + rename).

    An existing file at `path` is never replaced unless `overwrite=True`
    (`FileExistsError` otherwise). The parent folder is created if needed.
    """
    path = Path(path)
    text = dumps(record)
    try:
        return write_atomic(path, text, overwrite=overwrite)
    except FileExistsError:
        raise FileExistsError(
            f"record {path} already exists; refusing to overwrite it "
            "(pass overwrite=True / --overwrite, or write elsewhere)"
        ) from None


def read(path: str | os.PathLike) -> dict:
    """Reads and validates one record, with today's names (`upgrade_names`; a run of a
    bundled θ that is no longer shipped under its own, `mark_unshipped_theta`);
    `RecordError` names the file and the problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecordError(f"{path}: no such record file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise RecordError(f"{path}: cannot read record: {e}") from None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as e:
        raise RecordError(f"{path}: not valid JSON ({e})") from None
    return mark_unshipped_theta(upgrade_names(validate(record, where=str(path))))


def find(paths) -> list[Path]:
    """Record files among `paths`: files as given, folders searched for `*.json` (sorted),
    leaving out hidden files and folders (a run's `.checkpoints/`)."""
    found: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            found.extend(
                sorted(
                    q
                    for q in p.rglob("*.json")
                    if not any(part.startswith(".") for part in q.relative_to(p).parts)
                )
            )
        elif p.exists():
            found.append(p)
        else:
            raise RecordError(f"{p}: no such file or folder")
    if not found:
        raise RecordError(f"no record files (*.json) in {', '.join(map(str, paths))}")
    return found


def read_all(paths) -> list[dict]:
    """Every record found in `paths` (files or folders), each validated."""
    return [read(p) for p in find(paths)]
