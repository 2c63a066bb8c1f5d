"""A project written as public ones are (tests/deeplab_project: its own torchvision-style ASPP at rates 12/24/36 on
an 8x8 map, softmax output, TensorBoard-only API under its TensorBoardLogger, `val_loss` and torchmetrics
collections under their own names, a tuple of rates), swept by `ablate.sweep` as its authors wrote it: everything
it brings is kept, found and tabulated."""

from __future__ import annotations

import json
import os
import shutil
import statistics
from pathlib import Path

import optuna
import pytest

from ablate.study.space import load_sweep
from ablate.table import main as table

PROJECT = Path(__file__).parent / "deeplab_project"
RUN = {}  # what the module's one sweep left: folder, stdout


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """One sweep of the project (2 rate sets x 2 seeds, W&B offline), from a fresh folder."""
    import subprocess
    import sys

    folder = tmp_path_factory.mktemp("real")
    for name in ("deeplab.py", "config.yaml", "sweep.yaml"):
        shutil.copy(PROJECT / name, folder / name)
    text = (folder / "sweep.yaml").read_text().replace("seeds: [0]", "seeds: [0, 1]")
    (folder / "sweep.yaml").write_text(text)
    env = {**os.environ, "WANDB_MODE": "offline", "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "-m", "ablate.sweep", "sweep.yaml"], cwd=folder, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    RUN.update(folder=folder, out=done.stdout + done.stderr)
    return folder


def trials(folder: Path) -> list:
    return optuna.load_study(study_name="deeplab", storage=f"sqlite:///{folder}/runs/ablate.db").get_trials()


def rows(folder: Path, capsys, *args, study: str = "deeplab") -> list[dict]:
    os.chdir(folder)
    assert table(["--study", study, "--format", "json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def summaries(folder: Path, trial: int) -> list[dict]:
    runs = sorted((folder / "runs/deeplab").glob(f"t{trial}-s*/summary.json"))
    return [json.loads(p.read_text()) for p in runs]


def test_a_loss_with_no_direction_is_minimized_and_the_sweep_says_so(swept):
    assert "val_loss: minimized (inferred from its name" in RUN["out"]
    study = optuna.load_study(study_name="deeplab", storage=f"sqlite:///{swept}/runs/ablate.db")
    assert study.direction == optuna.study.StudyDirection.MINIMIZE


def test_an_explicit_direction_wins_and_prints_nothing(tmp_path):
    for name in ("deeplab.py", "config.yaml"):
        shutil.copy(PROJECT / name, tmp_path / name)
    text = (PROJECT / "sweep.yaml").read_text().replace("pruner: none}", "pruner: none, direction: maximize}")
    (tmp_path / "sweep.yaml").write_text(text)
    sweep = load_sweep(tmp_path / "sweep.yaml")
    assert sweep.study.direction == "maximize" and not sweep.direction_inferred
    assert load_sweep(PROJECT / "sweep.yaml").study.direction == "minimize"


def test_every_metric_it_logs_is_recorded_per_seed_last_and_at_the_best_epoch(swept):
    keys = {"val_loss", "train_loss", "val_MulticlassAccuracy", "val_MulticlassJaccardIndex", "lr-SGD"}
    for t in trials(swept):
        runs = summaries(swept, t.number)
        assert len(runs) == len(t.user_attrs["seeds"]) == 2
        for run, last, best in zip(runs, t.user_attrs["seed_metrics"], t.user_attrs["seed_metrics_best"]):
            assert keys <= last.keys() and keys - {"train_loss"} <= best.keys()
            assert all(last[k] == run[k] for k in keys)  # summary.json and the trial agree
            assert best["val_loss"] == run["val_loss_best"] == min(run["val_loss_best"], run["val_loss"])
            assert run["at_best"]["val_MulticlassAccuracy"] == best["val_MulticlassAccuracy"]


def test_its_own_metric_is_tabulated_in_its_own_direction_with_delta_in_points(swept, capsys):
    got = rows(swept, capsys, "--metric", "val_MulticlassAccuracy")
    means = [r["mean"] for r in got]
    assert means == sorted(means, reverse=True) and got[0]["verdict"] == "baseline"  # accuracy: higher is better
    assert {r["direction"] for r in got} == {"maximize"}
    for r in got:
        trial = r["variant"]  # the label's rates pick the trial
        number = next(t.number for t in trials(swept) if t.user_attrs["variant"] == trial)
        values = [s["val_MulticlassAccuracy"] for s in summaries(swept, number)]
        assert r["mean"] == pytest.approx(statistics.fmean(values))
    assert got[1]["delta"] == pytest.approx(100 * (got[1]["mean"] - got[0]["mean"]))  # a fraction: points
    at_best = rows(swept, capsys, "--metric", "val_MulticlassAccuracy", "--at", "best")
    number = next(t.number for t in trials(swept) if t.user_attrs["variant"] == at_best[0]["variant"])
    expected = [s["at_best"]["val_MulticlassAccuracy"] for s in summaries(swept, number)]
    assert at_best[0]["mean"] == pytest.approx(statistics.fmean(expected))


def test_a_loss_minimized_study_tabulated_by_miou_puts_the_best_miou_first_as_baseline(swept, capsys):
    by_loss = rows(swept, capsys)
    assert [r["mean"] for r in by_loss] == sorted(r["mean"] for r in by_loss)  # the study's loss: lowest first
    assert by_loss[1]["delta"] == pytest.approx(by_loss[1]["mean"] - by_loss[0]["mean"])  # a loss: its own units
    by_miou = rows(swept, capsys, "--metric", "val/mIoU")
    assert [r["mean"] for r in by_miou] == sorted((r["mean"] for r in by_miou), reverse=True)
    assert by_miou[0]["verdict"] == "baseline" and by_miou[0]["direction"] == "maximize"
    os.chdir(swept)
    assert table(["--study", "deeplab", "--metric", "val/mIoU"]) == 0
    out = capsys.readouterr().out
    assert "higher is better (maximize, inferred from its name)" in out and "Δ (points)" in out
    assert table(["--study", "deeplab", "--metric", "val/mIoU", "--direction", "minimize", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["mean"] == by_miou[-1]["mean"]  # an explicit direction wins
    assert table(["--study", "deeplab"]) == 0
    assert "Δ (val_loss)" in capsys.readouterr().out


def test_the_table_at_the_end_of_the_sweep_is_ablate_tables(swept, capsys):
    os.chdir(swept)
    assert table(["--study", "deeplab"]) == 0
    assert (swept / "runs/deeplab/table.md").read_text() == capsys.readouterr().out
    assert all(r["latency_ms"] for r in rows(swept, capsys))  # recorded by the runs, shown by both


def test_an_unrecorded_metric_lists_what_was_recorded(swept, capsys):
    os.chdir(swept)
    assert table(["--study", "deeplab", "--metric", "val_MulticlassRecall"]) == 2
    err = capsys.readouterr().err
    assert "'val_MulticlassRecall' was not recorded" in err and "val_MulticlassAccuracy" in err


def test_its_tensorboard_logger_stays_first_and_wandb_gets_its_metrics(swept):
    from helpers import finished_run_info

    assert list((swept / "runs/deeplab/t0-s0/tb/deeplab").glob("version_*/events.out.tfevents.*"))
    runs = sorted((swept / "runs/wandb").glob("offline-run-*"))
    assert len(runs) == 4
    summary = finished_run_info(runs[0])["summary"]
    assert {"val_MulticlassAccuracy", "val_loss", "val_loss_best"} <= summary.keys()


def test_its_own_aspp_is_found_by_structure_with_receptive_fields_and_the_degenerate_rate_warning(swept):
    assert "warning: decoder.0: ASPP rates [12, 24, 36] are degenerate on the 8x8 feature map" in RUN["out"]
    number = next(t.number for t in trials(swept) if "12,24,36" in t.user_attrs["variant"])
    run = summaries(swept, number)[0]
    # two 3x3 stride-2 convs: receptive field 7 px at stride 4; a 3x3 branch at rate r adds 2r positions x 4 px
    assert run["rf/encoder"] == 7 and run["feature_px"] == 8
    assert [run[f"rf/rate{r}"] for r in (12, 24, 36)] == [7 + 8 * r for r in (12, 24, 36)]
    assert run["rf/image_pool"] == 7 + 7 * 4 and run["taps9/rate12"] == 0.0  # every tap but the centre is padding
    import sys

    sys.path.insert(0, str(PROJECT))
    from deeplab import ASPP

    aspp = ASPP(32, (12, 24, 36), 16)  # config.yaml's aspp_channels
    assert run["params/neck"] == sum(p.numel() for p in aspp.parameters())


def test_a_hard_coded_aspp_is_swapped_from_the_config_and_its_options_swept_through_the_callback(tmp_path, capsys):
    from ablate.sweep import main as sweep

    for name in ("deeplab.py", "config.yaml", "swap.yaml", "swap_sweep.yaml"):
        shutil.copy(PROJECT / name, tmp_path / name)
    assert sweep(["swap_sweep.yaml"]) == 0
    capsys.readouterr()
    got = {r["variant"].rpartition("=")[2]: r for r in rows(tmp_path, capsys, study="swap")}
    # ablate's ASPP at width 16: 6 convs (1x1, 3 rates, pooling, projection), each with a BatchNorm (2 x 16) or a bias
    assert set(got) == {"bn", "none"} and got["bn"]["params/neck"] - got["none"]["params/neck"] == 6 * (32 - 16)
    config = json.loads((tmp_path / "runs/swap/t0-s0/summary.json").read_text())["config"]
    swap = config["trainer"]["callbacks"][1]["init_args"]["neck"]["init_args"]
    assert swap["rates"] == [1, 2, 3] and swap["norm"] in ("bn", "none")
