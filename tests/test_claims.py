"""The paper's claims judged from records (`hubopt.bench.claims`): the rule, the roles, the
verdicts, and RESULTS.md with its page and figures regenerated from the committed records."""

import math
import re
import shutil
import statistics
from pathlib import Path

import chromium
import pytest

from hubopt.bench import claims, claims_page, cli, optimizers, records, spec_language, sweep
from hubopt.bench.claims import (
    ADAMW,
    HUB,
    LEARNED,
    LGL2O,
    NO_GAP,
    NOT_REPRODUCED,
    NOT_RUN,
    NOT_TESTABLE,
    REPRODUCED,
    TUNED,
    Claim,
    compare,
)

ROOT = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------------------ the rule


def test_a_gap_beyond_two_standard_errors_wins_and_one_within_ties():
    hub, rival = [1.0, 2.0, 3.0], [3.0, 4.0, 5.0]  # both variances 1: 2 SE = 2·sqrt(2/3)
    two_se = 2 * math.sqrt(2 / 3)
    c = compare(hub, rival, higher_is_better=False)  # losses: HUB lower by 2 > 2 SE 1.63
    assert c.outcome == "better" and c.gap == pytest.approx(2.0)
    assert c.threshold == pytest.approx(two_se)
    assert compare(rival, hub, higher_is_better=False).outcome == "worse"
    near = [x + 1.6 for x in hub]  # gap 0.4 < 2 SE
    assert compare(near, rival, higher_is_better=False).outcome == "tie"
    just_beyond = [x - (two_se - 2.0) - 1e-9 for x in hub]  # gap a hair above 2 SE
    assert compare(just_beyond, rival, higher_is_better=False).outcome == "better"
    just_within = [x - (two_se - 2.0) + 1e-9 for x in hub]
    assert compare(just_within, rival, higher_is_better=False).outcome == "tie"


def test_a_higher_is_better_metric_turns_the_direction_around():
    low, high = [0.80, 0.81, 0.79], [0.90, 0.91, 0.89]
    assert compare(high, low, higher_is_better=True).outcome == "better"
    assert compare(high, low, higher_is_better=False).outcome == "worse"
    assert compare(high, low, True).gap == pytest.approx(0.1)


def test_a_diverged_side_loses_and_two_diverged_sides_tie():
    nan = [1.0, math.nan]
    assert compare([5.0, 6.0], nan, higher_is_better=False).outcome == "better"
    assert compare(nan, [5.0, 6.0], higher_is_better=True).outcome == "worse"
    assert compare([math.inf], nan, higher_is_better=False).outcome == "tie"


def test_a_one_seed_side_borrows_the_others_spread_and_two_one_seed_sides_tie():
    rival = [2.0, 4.0, 6.0]  # variance 4
    c = compare([1.0], rival, higher_is_better=False)
    assert c.threshold == pytest.approx(2 * math.sqrt(4 / 1 + 4 / 3))  # not 2·sqrt(4/3)
    assert c.outcome == "tie"  # gap 3 < 2 SE 4.6: with a spread of 0 it would be a win
    assert compare([-2.0], rival, higher_is_better=False).outcome == "better"  # gap 6
    assert compare(rival, [1.0], False).threshold == pytest.approx(c.threshold)
    alone = compare([1.0], [100.0], higher_is_better=False)
    assert alone.outcome == "tie" and math.isnan(alone.threshold)
    with pytest.raises(ValueError):
        compare([], [1.0], False)


# ------------------------------------------------------------------------------ records


def _record(task, spec, seed, test, valid=None, *, metric="mse", higher=False, step_s=0.01):
    """A schema-valid record of `spec` on `task` with the given test (and valid) metric."""
    valid = test if valid is None else valid
    loss = [2.0, 1.0, 0.5, 0.5 if math.isfinite(test) else math.nan]
    return records.validate(
        {
            "schema": records.SCHEMA,
            "task": {
                "name": task,
                "metric": metric,
                "higher_is_better": higher,
                "metric_split": "test",
                "size": "cpu",
                "num_steps": 30,
            },
            "optimizer": {
                "label": optimizers.label(spec),
                "spec": spec,
                "learned": optimizers.learned_slot(spec),
            },
            "seed": seed,
            "num_steps": 30,
            "hyperparameters": {"learning_rate": spec.get("learning_rate")},
            "curve": {"step": [0, 10, 20, 29], "loss": loss, "loss_mean": loss},
            "eval": {"step": [0, 30], "loss": [2.0, 0.5]},
            "first_nonfinite_step": None if math.isfinite(test) else 29,
            "best_loss": 0.5,
            "best_step": 30,
            "final_loss": 0.5,
            "metrics": {"test": {metric: test}, "valid": {metric: valid}},
            "timing": {"step_time_s": step_s, "wall_time_s": 1.0},
            "diagnostics": {},
            "meta": {"command": "pytest", "versions": {"hubopt": "test"}, "date": "d"},
        }
    )


class _Preset:
    def __init__(self, hand):
        self.hand = hand


def _spec(text, preset):
    return spec_language.parse(text, _Preset(preset)).to_dict()


ADAM = {"name": "adam", "learning_rate": 0.01}


def _runs(task, text, values, preset=ADAM, valid=None, **kw):
    spec = _spec(text, preset)
    valid = valid or values
    return [_record(task, spec, s, v, valid[s], **kw) for s, v in enumerate(values)]


# ------------------------------------------------------------------------------ roles


def test_roles_are_found_by_the_sweeps_spec_texts_and_the_tuned_rate_on_valid():
    # rate 0.01 is better on valid, 0.001 on test: the tuned row must be 0.01's
    recs = [
        *_runs("t_x", "preset", [0.5, 0.6, 0.7], valid=[0.1, 0.1, 0.1]),
        *_runs("t_x", "preset,lr=0.001", [0.1, 0.1, 0.1], valid=[0.9, 0.9, 0.9]),
        *_runs("t_x", "small", [0.4, 0.4, 0.5]),
        *_runs("t_x", "hub:preset+small", [0.3, 0.3, 0.3]),
        *_runs("t_x", "lgl2o:preset+small", [0.2, 0.3, 0.3]),
    ]
    roles = claims.find_roles(recs, "t_x")
    assert roles.preset == ADAM and roles.learned == "small"
    assert set(roles.contenders) == {TUNED, LEARNED, HUB, LGL2O}
    tuned = roles.contenders[TUNED]
    assert tuned.result.values == (0.5, 0.6, 0.7) and tuned.result.label.startswith("tuned adam")
    assert {r["optimizer"]["spec"]["learning_rate"] for r in tuned.records} == {0.01}
    assert roles.contenders[HUB].result.label == "hub(adam@0.01 | small)"


def test_the_recommended_role_is_hub_at_the_recommended_rule_in_its_mode(monkeypatch):
    import hubopt

    recs = [
        *_runs("t_x", "preset", [0.5, 0.6, 0.7]),
        *_runs("t_x", "small", [0.4, 0.4, 0.5]),
        *_runs("t_x", "hub:preset+small", [0.3, 0.3, 0.3]),
        *_runs("t_x", "hub:preset+small,sigma=hyper", [0.2, 0.2, 0.2]),
        *_runs("t_x", "hub:preset+small,sigma=hyper,mode=inverted", [0.1, 0.1, 0.1]),
    ]
    monkeypatch.setattr(hubopt, "RECOMMENDED_SIGMA", None)
    assert claims.RECOMMENDED not in claims.find_roles(recs, "t_x").contenders
    monkeypatch.setattr(hubopt, "RECOMMENDED_SIGMA", "hyper")
    for mode, values in (("default", (0.2, 0.2, 0.2)), ("inverted", (0.1, 0.1, 0.1))):
        monkeypatch.setattr(hubopt, "RECOMMENDED_MODE", mode)
        found = claims.find_roles(recs, "t_x").contenders[claims.RECOMMENDED]
        assert found.result.values == values, mode


def test_without_a_mixture_the_preset_and_so_every_role_is_unknown():
    recs = [*_runs("t_x", "adamw", [0.5, 0.6]), *_runs("t_x", "small", [0.4, 0.4])]
    roles = claims.find_roles(recs, "t_x")
    assert roles.preset is None and roles.contenders == {}  # no AdamW taken for Table 5


def test_an_adamw_preset_is_also_the_adamw_role_and_an_adam_preset_needs_its_own_run():
    adamw = {"name": "adamw", "learning_rate": 0.003, "weight_decay": 0.05}
    vit = [
        *_runs("t_v", "preset", [0.8, 0.8], adamw),
        *_runs("t_v", "hub:preset+small", [0.7] * 2, adamw),
    ]
    roles = claims.find_roles(vit, "t_v").contenders
    assert roles[ADAMW].records == roles[TUNED].records
    resnet = [*_runs("t_r", "preset", [0.8, 0.8]), *_runs("t_r", "hub:preset+small", [0.7] * 2)]
    assert ADAMW not in claims.find_roles(resnet, "t_r").contenders
    resnet += _runs("t_r", "adamw", [0.85, 0.86])
    found = claims.find_roles(resnet, "t_r").contenders[ADAMW]
    assert found.result.values == (0.85, 0.86) and "untuned" in found.result.label


def test_velo_fills_the_learned_slot_where_its_mixtures_are_on_record():
    recs = [
        *_runs("t_x", "small", [0.4, 0.4]),
        *_runs("t_x", "hub:preset+small", [0.3, 0.3]),
        *_runs("t_x", "velo", [0.2, 0.2]),
        *_runs("t_x", "hub:preset+velo", [0.1, 0.1]),
    ]
    roles = claims.find_roles(recs, "t_x")
    assert roles.learned == "velo"
    assert roles.contenders[LEARNED].result.label == "velo"
    assert roles.contenders[HUB].result.values == (0.1, 0.1)


def test_mixtures_that_disagree_on_the_preset_are_an_error():
    recs = [
        *_runs("t_x", "hub:preset+small", [0.3]),
        *_runs("t_x", "hub:preset+small", [0.3], {"name": "adam", "learning_rate": 0.1}),
    ]
    with pytest.raises(ValueError, match="disagree on their hand member"):
        claims.find_roles(recs, "t_x")


# ------------------------------------------------------------------------------ verdicts

TOY = Claim("toy", "Toy", "table4", "HUB wins.", ("t_x", "t_y"), (HUB,), (TUNED, LEARNED, LGL2O))


def _task(task, hub, tuned=(1.0, 1.1, 0.9), learned=(1.0, 1.1, 0.9), lgl2o=(1.0, 1.1, 0.9)):
    recs = _runs(task, "preset", tuned) + _runs(task, "small", learned)
    recs += _runs(task, "hub:preset+small", hub)
    return recs + (_runs(task, "lgl2o:preset+small", lgl2o) if lgl2o else [])


def _verdict(recs, claim=TOY):
    (j,) = claims.judge(recs, [claim])
    return j


def test_a_claim_is_reproduced_only_where_hub_beats_every_rival_on_every_task():
    win = (0.5, 0.55, 0.45)
    assert _verdict(_task("t_x", win) + _task("t_y", win)).verdict == REPRODUCED
    tie = (0.95, 1.05, 1.0)
    assert _verdict(_task("t_x", win) + _task("t_y", tie)).verdict == NO_GAP
    worse = (2.0, 2.1, 1.9)
    j = _verdict(_task("t_x", worse) + _task("t_y", tie))
    assert j.verdict == NOT_REPRODUCED  # a loss outweighs a tie
    assert j.variants[0].tasks["t_x"][1][TUNED].outcome == "worse"
    missing = _task("t_x", win) + _task("t_y", win, lgl2o=None)
    assert _verdict(missing).verdict == NOT_RUN
    assert _verdict(_task("t_x", win)).verdict == NOT_RUN  # t_y not run at all


def test_a_claim_holds_if_one_of_the_papers_variants_reproduces_it():
    claim = Claim("toy", "Toy", "table1", "HUB wins.", ("t_x",), (HUB, claims.INVERTED), (TUNED,))
    recs = _task("t_x", (2.0, 2.1, 1.9), lgl2o=None)  # default HUB loses
    assert _verdict(recs, claim).verdict == NOT_RUN  # inverted HUB might still win
    recs += _runs("t_x", "hub:preset+small,mode=inverted", [0.5, 0.5, 0.6])
    j = _verdict(recs, claim)
    assert j.verdict == REPRODUCED
    # the paper's two variants first; HUB at the recommended σ (not run here) after them
    paper = [v.verdict for v in j.variants if v.paper]
    assert paper == [NOT_REPRODUCED, REPRODUCED]
    assert [v.verdict for v in j.variants if not v.paper] == (
        [NOT_RUN] if sweep.recommended_contender() else []
    )


def test_velo_parts_are_not_testable_with_the_bundled_optimizer_and_judged_with_velo():
    (table2,) = [c for c in claims.CLAIMS if c.key == "table2"]
    win = (0.01, 0.011, 0.012)
    bundled = _task("sine_ltc", win) + _task("carracing_ltc", win)
    j = _verdict(bundled, table2)
    assert j.velo[0] == NOT_TESTABLE and j.verdict == REPRODUCED
    with_velo = []
    for task in ("sine_ltc", "carracing_ltc"):
        with_velo += _runs(task, "preset", [1.0, 1.1, 0.9])
        with_velo += _runs(task, "velo", [1.0, math.nan, 1.0] if task == "sine_ltc" else [1.0] * 3)
        with_velo += _runs(task, "hub:preset+velo", win)
        with_velo += _runs(task, "lgl2o:preset+velo", [1.0, 1.1, 0.9])
    j = _verdict(with_velo, table2)
    assert j.velo == (REPRODUCED, "learned alone: 1 of 3 seeds diverged")
    assert j.verdict == REPRODUCED  # a diverged rival loses to a finite HUB


def test_every_claim_is_judged_on_tasks_and_contenders_its_sweep_preset_runs():
    for claim in claims.CLAIMS:
        tasks, extra, _seeds = sweep.TABLES[claim.preset]
        assert set(claim.tasks) <= set(tasks), claim.key
        texts = {"preset", *sweep.PAPER_CONTENDERS, *extra}
        for role in claim.hubs + claim.rivals:
            assert claims.ROLE_SPECS[role] in texts, (claim.key, role)
    assert {c.preset for c in claims.CLAIMS} == set(sweep.TABLES)  # every table and figure


def test_a_missing_runs_name_takes_the_tasks_learned_optimizer_in_its_learned_slot_only():
    w = claims._with_learned
    assert w("small", "velo") == "velo"
    assert w("hub:preset+small,sigma=hyper,mode=inverted", "velo") == (
        "hub:preset+velo,sigma=hyper,mode=inverted"
    )
    assert w("lgl2o:preset+small", "velo") == "lgl2o:preset+velo"
    for untouched in ("preset", "theta(runs/small.msgpack)", "hub:preset+smaller"):
        assert w(untouched, "velo") == untouched


def test_preset_time_counts_the_presets_runs_and_estimates_the_missing_ones():
    task = "volume_siren"  # table4: its one task
    n = sweep.TABLES["table4"][2]  # the preset's default seeds
    recs = _runs(task, "preset", [1.0] * 3, step_s=0.01)
    recs += _runs(task, "preset,lr=0.003", [1.0] * 3, step_s=0.02)
    recs += _runs(task, "small", [1.0] * 3, step_s=0.03)
    recs += _runs(task, "hub:preset+small", [1.0] * 3, step_s=0.04)  # LGL2O not run
    t = claims.preset_time(recs, "table4")
    assert (t.runs, t.recorded) == (5 * n, 4 * min(3, n))  # 3 seeds of 4 contenders on record
    median = statistics.median([0.01] * 3 + [0.02] * 3 + [0.03] * 3 + [0.04] * 3) * 30
    assert t.seconds == pytest.approx(n * 30 * (0.01 + 0.02 + 0.03 + 0.04) + n * median)
    assert "lgl2o:preset+small at the task's median" in t.notes[0]


# ------------------------------------------------------------------------------ RESULTS.md

COMMAND = "hubopt report --fill RESULTS.md"


@pytest.fixture(scope="module")
def regenerated():
    text = (ROOT / "RESULTS.md").read_text()
    return text, *claims_page.fill_blocks(text, ROOT, COMMAND)


def test_results_md_and_its_page_are_regenerated_byte_for_byte(regenerated):
    text, filled, files = regenerated
    assert claims_page.CLAIMS_BLOCK.search(text), "RESULTS.md has no claims block"
    assert filled == text, (
        "RESULTS.md differs from the records: run `hubopt report --fill RESULTS.md`"
    )
    page = ROOT / "docs/report/index.html"
    assert files[page] == page.read_bytes(), "docs/report/index.html differs from the records"
    for j in claims.judge(records.read_all([ROOT / "benchmarks/records/sigma_cpu"])):
        assert f"{j.claim.title} | {j.claim.preset} |" in text and j.verdict in claims.WORST_FIRST


def test_the_claims_figures_are_regenerated_byte_for_byte_under_the_pages_libraries(regenerated):
    _text, _filled, files = regenerated
    page = (ROOT / "docs/report/index.html").read_text()
    pngs = {path: data for path, data in files.items() if path.suffix == ".png"}
    assert len(pngs) == len(claims.CLAIMS) and all(p.is_file() for p in pngs)
    assert sum(p.stat().st_size for p in pngs) < 600_000  # small enough to commit
    named = re.search(r"figures drawn with (matplotlib [\w.]+, Pillow [\w.]+)", page)
    drawing = claims_page._drawing_versions()
    if named is None or named[1] != drawing:
        pytest.skip(
            f"the PNGs were drawn with {named and named[1]}, this is {drawing}: "
            "their bytes are not compared"
        )
    for path, data in pngs.items():
        assert path.read_bytes() == data, f"{path} differs from the records"


FIGURE_BLUE = (0x1F, 0x77, 0xB4)  # matplotlib's first line colour


def test_the_page_is_drawn_with_its_figures_by_headless_chromium(tmp_path):
    page = ROOT / "docs/report/index.html"
    pixels = chromium.screenshot(page.as_uri(), tmp_path / "with", 1200, 4000)
    assert chromium.count(pixels[:300], (0x1F, 0x3B, 0x73)) > 2000  # title, rule, table head
    drawn = chromium.count(pixels, FIGURE_BLUE, tol=20)
    assert drawn > 500
    bare = tmp_path / "bare"  # the same page without its PNGs: no figure is drawn
    bare.mkdir()
    shutil.copy(page, bare / "index.html")
    pixels = chromium.screenshot((bare / "index.html").as_uri(), tmp_path / "without", 1200, 4000)
    assert chromium.count(pixels, FIGURE_BLUE, tol=20) < drawn / 10


def test_fill_writes_the_figures_and_page_once_and_then_is_up_to_date(tmp_path, capsys):
    folder = tmp_path / "runs"
    win = (0.5, 0.55, 0.45)
    for i, rec in enumerate(_task("volume_siren", win)):
        records.write(rec, folder / f"run{i}.json")
    doc = tmp_path / "doc.md"
    doc.write_text("top\n<!-- claims: runs figs -->\nstale\n<!-- end claims -->\nend\n")
    assert cli.main(["report", "--fill", str(doc)]) == 0
    assert "wrote" in capsys.readouterr().out
    filled = doc.read_text()
    assert "stale" not in filled and filled.endswith("<!-- end claims -->\nend\n")
    assert "| Table 4 / Fig. 5 | table4 | volume_siren | reproduced |" in filled
    assert "| Table 2 / Fig. 4a | table2 | sine_ltc, carracing_ltc | not run yet |" in filled
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == [
        "claim_table4.png",
        "index.html",
    ]
    assert cli.main(["report", "--fill", str(doc)]) == 0
    out = capsys.readouterr().out
    assert "wrote" not in out and "up to date" in out
