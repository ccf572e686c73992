"""BENCHMARKS.md's results tables are made from the committed records by a command."""

from pathlib import Path

from hubopt.bench import cli, report

ROOT = Path(__file__).resolve().parents[1]


def test_benchmarks_md_results_blocks_are_the_reports_of_the_committed_records():
    text = (ROOT / "BENCHMARKS.md").read_text()
    folders = [m["folder"] for m in report.RESULTS_BLOCK.finditer(text)]
    assert "benchmarks/records/tasks_recurrent_cpu" in folders
    filled, beside = report.fill(text, ROOT)
    assert not beside  # BENCHMARKS.md has no claims block, so nothing goes beside it
    assert filled == text, (
        "BENCHMARKS.md's results tables differ from the records: run "
        "`hubopt report --fill BENCHMARKS.md` and commit"
    )


def test_fill_rewrites_only_the_blocks_and_says_when_there_are_none(tmp_path, capsys):
    from hubopt.bench import sweep

    sweep.run_sweep(
        [sweep.Point("nonconvex_l1cos", "adam", 0, "tiny", steps=3)], str(tmp_path / "r")
    )
    doc = tmp_path / "doc.md"
    doc.write_text("before\n<!-- results: r -->\nstale\n<!-- end results -->\nafter\n")
    assert cli.main(["report", "--fill", str(doc)]) == 0
    filled = doc.read_text()
    assert filled.startswith("before\n<!-- results: r -->\n| task | optimizer |")
    assert "stale" not in filled and filled.endswith("<!-- end results -->\nafter\n")
    assert "| **nonconvex_l1cos** | **adam@0.001** |" in filled  # the only row: the best
    assert cli.main(["report", "--fill", str(doc)]) == 0
    assert "up to date" in capsys.readouterr().out and doc.read_text() == filled
    (tmp_path / "plain.md").write_text("no blocks\n")
    assert cli.main(["report", "--fill", str(tmp_path / "plain.md")]) == 1
    err = capsys.readouterr().err
    assert "no generated blocks" in err and "<!-- results: FOLDER -->" in err
    assert cli.main(["report"]) == 2
