"""The report's results table (best rows, divergence, formats) and its HTML page, rendered
by headless Chromium and checked by its pixels."""

import math

import chromium
import numpy as np
import pytest

from hubopt.bench import cli, records, report, runner
from hubopt.bench.report import Result, best_rows, render_table
from hubopt.tasks import get_task

HUB = {
    "name": "hub",
    "hand": {"name": "adam", "learning_rate": 1e-2},
    "learned": {"name": "stand-in", "optimizer": {"name": "adamax", "learning_rate": 2e-3}},
    "mode": "default",
    "clip": None,
}
LGL2O = {**HUB, "name": "lgl2o"}
del LGL2O["mode"], LGL2O["clip"]


def _result(label, values, higher=False, diverged=0, task="t_x"):
    return Result(
        task=task,
        label=label,
        metric="m",
        higher_is_better=higher,
        split="test",
        values=tuple(values),
        seeds=tuple(range(len(values))),
        diverged=diverged,
        first_divergence=7 if diverged else None,
        step_time_us=1.0,
        is_hand=False,
    )


def test_best_rows_follow_the_direction_skip_diverged_rows_and_keep_ties():
    rows = [_result("a", [1.0, 3.0]), _result("b", [0.5, 0.7]), _result("c", [0.1], diverged=1)]
    assert best_rows(rows) == {("t_x", "b")}  # c is lower but diverged
    up = [_result("a", [0.9], higher=True, task="t_y"), _result("b", [0.8], True, task="t_y")]
    assert best_rows(up) == {("t_y", "a")}
    ties = [_result("a", [2.0]), _result("b", [1.0, 3.0])]
    assert best_rows(ties) == {("t_x", "a"), ("t_x", "b")}
    assert best_rows([_result("a", [math.nan]), _result("b", [1.0], diverged=1)]) == set()


@pytest.fixture(scope="module")
def record_dir(tmp_path_factory):
    """Real records of a tiny task: Adam, HUB, LGL2O and a diverged Adam, 2 seeds each."""
    out = tmp_path_factory.mktemp("records")
    task = get_task("sine_lstm", "tiny")
    for spec in (dict(task.hand), HUB, LGL2O, {"name": "adam", "learning_rate": 1e30}):
        for seed in (0, 1):
            runner.train_and_record(task, spec, seed=seed, out_dir=out, log=lambda *_: None)
    return out


def test_results_table_marks_the_best_and_reports_divergence(record_dir):
    recs = records.read_all([record_dir])
    rows = {r.label: r for r in report.results(recs)}
    diverged = rows["adam@1e+30"]
    assert diverged.diverged == 2 and diverged.first_divergence is not None
    first = min(r["first_nonfinite_step"] for r in recs if r["optimizer"]["label"] == "adam@1e+30")
    md = report.results_table(recs, "md")
    assert f"NaN (2 of 2 seeds; first at step {first})" in md
    best = report.best_rows(list(rows.values()))
    top = min(np.mean(r.values) for r in rows.values() if r.finite)
    assert best == {
        ("sine_lstm", r.label) for r in rows.values() if r.finite and np.mean(r.values) == top
    }
    for _, label in best:
        line = next(line for line in md.splitlines() if f"**{report._cell(label)}**" in line)
        assert "test mse" in line
    # the tuned row: the diverged rate is ineligible, so it is the other rate's runs
    ((tuned, selection),) = report.tuned_results(recs)
    assert selection["learning_rate"] == 0.01 and tuned.values == rows["adam@0.01"].values
    assert md.count("**sine_lstm**") == len(best) + (np.mean(tuned.values) == top)
    assert f"**{report._cell(diverged.label)}**" not in md
    # "× hand": every row's step time over the fastest hand optimizer's
    assert "1.00×" in md or "× hand" in md


def test_latex_and_markdown_escape_their_special_characters():
    tex = render_table(["a_b"], [["5% of x_y {z} | ±"]], "latex")
    assert r"5\% of x\_y \{z\} $|$ $\pm$" in tex and tex.startswith(r"\begin{tabular}{l}")
    assert r"\textbackslash{}" in render_table(["a"], [["\\"]], "latex")
    assert "x\\|y" in render_table(["a"], [["x|y"]], "md")
    assert "&lt;script&gt;" in render_table(["a"], [["<script>"]], "html")
    with pytest.raises(ValueError, match="unknown table format"):
        render_table(["a"], [["b"]], "docx")


def test_every_format_is_written_from_the_records(record_dir, tmp_path):
    files = report.report(
        [record_dir], tmp_path, report_command="pytest", formats=("md", "csv", "latex", "html")
    )
    for name in ("table_md", "table_csv", "table_tex", "html", "loss_curves", "metric_curves"):
        assert files[name].is_file(), name
    assert {"hand_share", "sigma_histograms", "lgl2o_choice", "step_times"} <= set(files)
    page = files["html"].read_text()
    assert page.count("data:image/png;base64,") == 6  # every figure embedded
    assert "http://" not in page and "https://" not in page  # self-contained
    assert "pytest" in page and "records made by" in page
    assert files["table_tex"].read_text().startswith("% records made by")
    with pytest.raises(ValueError, match="unknown report format"):
        report.report([record_dir], tmp_path, formats=("pdf",))


def test_cli_report_formats(record_dir, tmp_path, capsys):
    args = ["report", str(record_dir), "--out", str(tmp_path), "--format", "html"]
    assert cli.main(args) == 0
    assert (tmp_path / "index.html").is_file() and not (tmp_path / "table.md").exists()
    assert "index.html" in capsys.readouterr().out
    assert cli.main(["report", str(tmp_path / "nothing"), "--out", str(tmp_path)]) == 1


def test_the_html_report_renders_in_headless_chromium(record_dir, tmp_path):
    """Chromium (installed by make test) draws the page; its pixels must show the title rule,
    the table header, the best row's highlight and the embedded figures."""
    page = report.report([record_dir], tmp_path, formats=("html",))["html"]
    pixels = chromium.screenshot(page.as_uri(), tmp_path, 1200, 6000)
    navy, green = (0x1F, 0x3B, 0x73), (0xD8, 0xF0, 0xD8)
    assert chromium.count(pixels[:400], navy) > 2000  # the title, its rule, the table header
    assert chromium.count(pixels, green) > 2000  # the best row's highlight
    # the figures: matplotlib's first line colour (#1f77b4) drawn in the lower part
    figures = pixels[1200:]
    assert chromium.count(figures, (0x1F, 0x77, 0xB4), tol=20) > 500
    assert np.mean(np.all(figures > 245, axis=-1)) < 0.97  # not a blank page
