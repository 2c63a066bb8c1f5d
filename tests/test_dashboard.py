"""The W&B workspace spec of a study, built from a real tiny sweep, against what its W&B runs really hold."""

import json

import pytest
from helpers import STORAGE

from ablate.dashboard import main as dashboard
from ablate.data.shapes import CLASSES


@pytest.fixture(scope="module")
def study(shared_study):
    """The session's finished study (tests/conftest.py: fusion x lr, 3 variants x 2 seeds) and its W&B runs."""
    return shared_study.folder, shared_study.runs


def _spec(folder, capsys, *args) -> dict:
    capsys.readouterr()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        assert dashboard(["--study", "t", "--storage", STORAGE, "--dry-run", *args]) == 0
    return json.loads(capsys.readouterr().out)


def _panels(spec: dict) -> dict[str, list]:
    sections = spec["spec"]["section"]["panelBankConfig"]["sections"]
    return {s["name"]: s["panels"] for s in sections}


def _resolve(accessor: str, run: dict):
    """A parallel-coordinates accessor (config:a.value.b | summary:k) looked up in an offline run."""
    section, _, name = accessor.partition(":")
    if section == "summary":
        return run["summary"].get(name)
    top, _, rest = name.partition(".value")
    value = run["config"].get(top)
    return value.get(rest.lstrip(".")) if rest else value


def test_dry_run_spec_groups_by_variant_and_shows_what_the_runs_log(study, capsys):
    folder, runs = study
    spec = _spec(folder, capsys, "--entity", "E", "--project", "P")
    assert (spec["entity"], spec["project"], spec["displayName"]) == ("E", "P", "ablate: t")
    (runset,) = spec["spec"]["section"]["runSets"]
    assert runset["grouping"] == [{"section": "run", "name": "group"}]  # a W&B run's group is its variant
    (tags,) = runset["filters"]["filters"]
    assert (tags["key"]["name"], tags["op"], tags["value"]) == ("tags", "IN", ["t"])
    panels = _panels(spec)
    assert list(panels) == ["Variants", "Per-class IoU", "Best epoch"]
    kinds = {p["viewType"]: p["config"] for p in panels["Variants"]}
    bar = kinds["Bar Chart"]
    assert bar["metrics"] == ["summary_metrics.val/mIoU_best"]
    assert (bar["groupAgg"], bar["groupArea"]) == ("mean", "stddev")  # mean ± std over seeds
    columns = [c["accessor"] for c in kinds["Parallel Coordinates Plot"]["columns"]]
    assert columns == ["config:neck.value.fusion", "config:swept.value.optim/lr", "summary:val/mIoU_best"]
    scatters = [
        (p["config"]["xAxis"], p["config"]["yAxis"]) for p in panels["Variants"] if p["viewType"] == "Scatter Plot"
    ]
    assert ("summary:params/neck", "summary:val/mIoU_best") in scatters
    assert len(runs) == 6  # 3 variants x 2 seeds
    for run in runs:  # grouped by the variant; every axis and point of the panels exists in every run
        config = run["config"]
        assert run["group"] == f"model.neck.fusion={config['model.neck.fusion']} optim.lr={config['optim.lr']}"
        values = {c: _resolve(c, run) for c in columns}
        assert None not in values.values(), values
        assert values["config:neck.value.fusion"] == run["config"]["model.neck.fusion"]
        assert values["config:swept.value.optim/lr"] == run["config"]["optim.lr"]
        for key in (x.partition(":")[2] for pair in scatters for x in pair):
            assert key in run["summary"], key
        assert any("val/predictions/_type" in h for h in run["history"])


def test_per_class_panels_name_the_classes_the_runs_logged(study, capsys):
    folder, runs = study
    plots = _panels(_spec(folder, capsys, "--entity", "E"))["Per-class IoU"]
    metrics = [m for p in plots for m in p["config"]["metrics"]]
    assert metrics and all(m.startswith("val/IoU/") and m.removeprefix("val/IoU/") in CLASSES for m in metrics)
    assert "val/IoU/background" in metrics
    logged = {k for run in runs for h in run["history"] for k in h}
    assert set(metrics) <= logged
    media = _panels(_spec(folder, capsys, "--entity", "E"))["Best epoch"]
    assert [(m["viewType"], m["config"]["mediaKeys"]) for m in media] == [
        ("Media Browser", ["val/predictions"]),
        ("Media Browser", ["val/erf"]),
    ]
    assert all(
        any(f"{key}/_type" in h for h in run["history"]) for key in ("val/predictions", "val/erf") for run in runs
    )  # what the panels show, every run logged


def test_clear_errors_for_an_unknown_study_and_an_unknown_entity(study, capsys, monkeypatch):
    folder, _ = study
    monkeypatch.chdir(folder)
    assert dashboard(["--study", "nope", "--storage", STORAGE, "--dry-run"]) == 2
    assert f"no study 'nope' in {STORAGE}; studies there: t" in capsys.readouterr().err
    assert dashboard(["--study", "t", "--storage", STORAGE, "--dry-run"]) == 2  # wandb.entity is null
    assert "--entity" in capsys.readouterr().err
