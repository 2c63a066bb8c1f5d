"""`python -m ablate.table` on a real study: every format equals what one computes by hand from the trials."""

import csv
import io
import json
import statistics
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from scipy.stats import ttest_rel

from ablate.table import main


@pytest.fixture(scope="module")
def study(shared_study):
    """The session's finished study (tests/conftest.py): its complete trials by variant (3 variants x 2 seeds of a
    fusion x lr grid), and a 4th variant whose only trial failed."""
    global URL, WANDB_DIR, CONCAT, SUM, FAILED, RUNS
    done = shared_study.complete
    CONCAT = next(v for v in sorted(done) if "fusion=concat" in v)  # the baseline
    SUM = next(v for v in sorted(done) if "fusion=sum" in v)
    URL, WANDB_DIR, FAILED = shared_study.url, str(shared_study.wandb_dir), shared_study.failed
    RUNS = shared_study.runs
    return done


URL = WANDB_DIR = CONCAT = SUM = FAILED = ""
RUNS = []
SEEDS = ["0", "1"]


def table(capsys, *args):
    assert main(["--study", "t", "--storage", URL, *args]) == 0
    return capsys.readouterr().out


def test_json_rows_equal_the_hand_computation(study, capsys):
    baseline = CONCAT.replace(" ", ",")  # --baseline KEY=VALUE,KEY=VALUE
    runs = str(Path(WANDB_DIR).parent)  # the study's run folders: the latency they recorded
    rows = {
        r["variant"]: r for r in json.loads(table(capsys, "--format", "json", "--baseline", baseline, "--runs", runs))
    }
    base = study[CONCAT].user_attrs["values"]
    for variant, t in study.items():
        values = t.user_attrs["values"]
        r = rows[variant]
        assert r["n"] == len(SEEDS) and r["seeds"] == dict(zip(SEEDS, values))
        assert r["mean"] == pytest.approx(statistics.fmean(values))
        assert r["std"] == pytest.approx(statistics.stdev(values))  # ddof=1
        assert r["delta"] == pytest.approx(100 * (statistics.fmean(values) - statistics.fmean(base)))
        assert r["params/neck"] == t.user_attrs["params/neck"] and r["gflops"] == t.user_attrs["gflops"]
        assert r["latency_ms"] > 0 and isinstance(r["optim.lr"], float)  # settings typed as the space declares them
        assert all(r[k] == yaml.safe_load(v) for k, v in (s.split("=") for s in variant.split()))
    assert rows[CONCAT]["p_value"] is None and rows[CONCAT]["verdict"] == "baseline"
    others = [v for v in study if v != CONCAT]
    for v in others:  # the same seeds as the baseline: paired t
        assert rows[v]["test"] == "paired" and rows[v]["ci_low"] <= rows[v]["delta"] <= rows[v]["ci_high"]
        assert rows[v]["p_value"] == pytest.approx(ttest_rel(study[v].user_attrs["values"], base).pvalue)
        assert rows[v]["verdict"] in ("better", "worse", "undecided")
    low, high = sorted(others, key=lambda v: rows[v]["p_value"])  # Holm by hand over the two compared rows
    assert rows[low]["p_adjusted"] == pytest.approx(min(1, 2 * rows[low]["p_value"]))
    assert rows[high]["p_adjusted"] == pytest.approx(max(rows[low]["p_adjusted"], rows[high]["p_value"]))
    failed = rows[FAILED]
    assert failed["status"] == "failed" and failed["n"] == 0 and failed["mean"] is None
    assert list(rows) == sorted(rows, key=lambda v: (rows[v]["mean"] is None, -(rows[v]["mean"] or 0)))


def test_csv_round_trips(study, capsys):
    rows = list(csv.DictReader(io.StringIO(table(capsys, "--format", "csv"))))
    by_variant = {r["variant"]: r for r in rows}
    for variant, t in study.items():
        assert float(by_variant[variant]["mean"]) == pytest.approx(statistics.fmean(t.user_attrs["values"]))
        assert float(by_variant[variant]["std"]) == pytest.approx(statistics.stdev(t.user_attrs["values"]))
        assert json.loads(by_variant[variant]["seeds"]) == dict(zip(SEEDS, t.user_attrs["values"]))


def test_markdown_latex_and_html_show_the_same_numbers(study, capsys):
    for t in study.values():
        v = t.user_attrs["values"]
        cell = f"{statistics.fmean(v):.4f} ± {statistics.stdev(v):.4f}"
        assert cell in table(capsys, "--format", "md")
        assert cell.replace("±", r"$\pm$") in table(capsys, "--format", "latex")
        assert cell in table(capsys, "--format", "html")
    latex = table(capsys, "--format", "latex").splitlines()
    assert latex[0].startswith(r"\begin{tabular}{") and latex[1] == r"\toprule" and latex[-1] == r"\end{tabular}"
    columns = len(latex[0].split("{")[2].rstrip("}"))
    body = [line for line in latex if line.endswith(r"\\")]
    assert len(body) == 5 and all(line.count(" & ") == columns - 1 for line in body)  # header + 4 rows

    class Cells(HTMLParser):
        rows = 0

        def handle_starttag(self, tag, attrs):
            self.rows += tag == "tr"

    parser = Cells()
    parser.feed(table(capsys, "--format", "html"))
    assert parser.rows == 5


def test_bad_baseline_and_unknown_study_are_clear_errors(study, capsys):
    assert main(["--study", "t", "--storage", URL, "--baseline", "model.neck.fusion=mean"]) == 2
    assert "matches 0 rows" in capsys.readouterr().err
    assert main(["--study", "nope", "--storage", URL]) == 2
    assert f"no study 'nope' in {URL}; studies there: t" in capsys.readouterr().err


def test_from_wandb_gives_the_same_rows_as_the_storage(study, capsys):
    runs = str(Path(WANDB_DIR).parent)  # the study's run folders: the latency they recorded
    from_storage = {r["variant"]: r for r in json.loads(table(capsys, "--format", "json", "--runs", runs))}
    assert main(["--from-wandb", WANDB_DIR, "--format", "json"]) == 0
    from_wandb = {r["variant"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(from_wandb) == set(study)  # the failed trial added to the storage never reached W&B
    for variant in study:
        a, b = from_wandb[variant], from_storage[variant]
        assert a["seeds"] == pytest.approx(b["seeds"]) and a["n"] == b["n"] == len(SEEDS)
        assert a["mean"] == pytest.approx(b["mean"]) and a["std"] == pytest.approx(b["std"])
        assert a["params/neck"] == b["params/neck"]
        recorded = [r["summary"]["latency_ms"] for r in RUNS if r["group"] == variant]  # each run's, as it ended
        assert a["latency_ms"] == b["latency_ms"] == min(recorded) and len(recorded) == len(SEEDS)


def test_latex_compiles_with_booktabs(study, capsys, tmp_path):
    import subprocess

    doc = "\\documentclass{article}\\usepackage{booktabs}\\begin{document}\n%s\\end{document}\n"
    (tmp_path / "t.tex").write_text(doc % table(capsys, "--format", "latex"))
    done = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "t.tex"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-2000:]
    assert (tmp_path / "t.pdf").stat().st_size > 0


def test_another_metric_uses_each_seeds_last_epoch(study, capsys):
    rows = {r["variant"]: r for r in json.loads(table(capsys, "--format", "json", "--metric", "val/pixel_acc"))}
    for variant, t in study.items():
        values = [m["val/pixel_acc"] for m in t.user_attrs["seed_metrics"]]
        assert rows[variant]["mean"] == pytest.approx(statistics.fmean(values))
    assert main(["--study", "t", "--storage", URL, "--metric", "val/nope"]) == 2
    assert "val/pixel_acc" in capsys.readouterr().err  # the error lists what was recorded
