"""A user's LightningCLI project swept unchanged: examples/lightning_project with its own ablation.yaml, a real
Trainer, real SQLite and real W&B offline files."""

import csv
import dataclasses
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from helpers import finished_run_info as run_info
from optuna.trial import TrialState

from ablate.sweep import main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "lightning_project"
ABLATION = str(EXAMPLE / "ablation.yaml")
STUDY = "lightning_project"  # ablation.yaml's study.name; the default storage is sqlite:///runs/ablate.db
CSV_LOGGER = "trainer.logger={class_path: lightning.pytorch.loggers.CSVLogger, init_args: {save_dir: logs}}"
TINY = [
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "data.init_args.train_size=16",
    "data.init_args.val_size=8",
    "data.init_args.batch_size=8",
]


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    """One torch thread here and in the processes started: tiny models on a shared 2-core machine are many times
    faster without intra-op threads spinning against each other."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield
    torch.set_num_threads(threads)


def trials():
    return optuna.load_study(study_name=STUDY, storage="sqlite:///runs/ablate.db").get_trials()


def sweep(*args, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "ablate.sweep", ABLATION, *TINY, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


def csv_metric(run: str, key: str) -> list[float]:
    """`key` at every validation of run folder `run`'s last fit, as the project's own CSVLogger wrote it."""
    paths = Path(f"runs/{STUDY}/{run}/logs").glob("lightning_logs/version_*/metrics.csv")  # its save_dir, rehomed
    path = max(paths, key=lambda p: int(p.parent.name.removeprefix("version_")))
    return [float(row[key]) for row in csv.DictReader(path.open()) if row.get(key)]


def test_the_example_project_gives_complete_trials_one_wandb_run_per_seed_and_a_table_of_best_values(capsys):
    assert main([ABLATION, *TINY, CSV_LOGGER, "--n-trials", "2", "--seeds", "0,1"]) == 0
    done = trials()
    assert [t.state for t in done] == [TrialState.COMPLETE] * 2
    runs = {info["name"]: info for info in map(run_info, Path("runs/wandb").glob("offline-run-*"))}
    assert sorted(runs) == ["t0-s0", "t0-s1", "t1-s0", "t1-s1"]
    for t in done:  # grouped by variant, and the trial's values are each seed's best val/mIoU
        for seed, value in zip((0, 1), t.user_attrs["values"]):
            run = runs[f"t{t.number}-s{seed}"]
            assert run["group"] == t.user_attrs["variant"] and run["job_type"] == "trial" and run["exit_code"] == 0
            assert value == run["summary"]["val/mIoU_best"] == max(csv_metric(f"t{t.number}-s{seed}", "val/mIoU"))
            assert_callbacks_ran(Path(f"runs/{STUDY}/t{t.number}-s{seed}"), value)
    capsys.readouterr()
    from ablate.table import main as table

    assert table(["--study", STUDY, "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    expected = {t.user_attrs["variant"]: {"0": t.user_attrs["values"][0], "1": t.user_attrs["values"][1]} for t in done}
    assert {r["variant"]: r["seeds"] for r in rows} == expected
    assert all(r["params/neck"] > 0 and r["latency_ms"] > 0 for r in rows)  # what the project's runs recorded
    assert table(["--from-wandb", "runs/wandb", "--metric", "val/mIoU", "--format", "json"]) == 0
    assert {r["variant"]: r["seeds"] for r in json.loads(capsys.readouterr().out)} == expected  # the same from W&B


def assert_callbacks_ran(folder: Path, best: float) -> None:
    """ablate.callbacks, added by the sweep: per-class keys with the data's class names, costs, RF, ERF and the
    three files; the best epoch's confusion matrix, counted here, gives the module's own best val/mIoU."""
    import numpy as np

    saved = json.loads((folder / "summary.json").read_text())
    matrix = np.array(json.loads((folder / "confusion.json").read_text())["matrix"])
    tp, union = np.diag(matrix), matrix.sum(0) + matrix.sum(1) - np.diag(matrix)
    assert (tp[union > 0] / union[union > 0]).mean() == pytest.approx(best, abs=1e-6)
    classes = ("background", "square", "disc")  # ShapesData.classes
    assert {f"val/IoU/{c}" for c in classes} <= set(saved) and "val/pixel_acc" in saved and "val/acc" in saved
    for key in ("params/neck", "params/total", "gflops", "latency_ms", "rf/encoder", "rf/rate3", "erf/r90_px"):
        assert saved[key] > 0, key
    assert all((folder / f).is_file() for f in ("confusion.json", "predictions.png", "predictions.npz", "erf.png"))


def test_report_and_dashboard_work_on_a_lightning_cli_study(capsys):
    from ablate.dashboard import main as dashboard
    from ablate.report import main as report

    assert main([ABLATION, *TINY, "--n-trials", "1", "--seeds", "0", "trainer.max_epochs=1"]) == 0
    assert report(["--study", STUDY]) == 0
    page = Path(f"runs/{STUDY}/report.html").read_text()
    assert "Comparison table" in page and "rf/rate3" in page and 'alt="ERF"' in page  # from the run folders
    capsys.readouterr()
    assert dashboard(["--study", STUDY, "--dry-run", "--entity", "e", "--project", "p"]) == 0
    assert "summary:val/mIoU_best" in capsys.readouterr().out
    assert dashboard(["--study", STUDY, "--dry-run", "--entity", "e"]) == 0  # where the sweep put the runs
    assert json.loads(capsys.readouterr().out)["project"] == "ablate"  # $WANDB_PROJECT unset, as in the sweep


RUN_FILES = ("confusion.json", "predictions.png", "predictions.npz", "erf.png")


def test_table_and_report_read_a_projects_run_folders_as_a_built_in_studys(capsys):
    import base64

    from ablate.report import main as report
    from ablate.table import main as table

    assert main([ABLATION, *TINY, "--n-trials", "2", "--seeds", "0,1", "trainer.max_epochs=1"]) == 0
    folders = sorted(Path(f"runs/{STUDY}").glob("t*-s*"))
    assert len(folders) == 4 and all((f / name).is_file() for f in folders for name in RUN_FILES)  # ablate.callbacks
    runs = {f.name: json.loads((f / "summary.json").read_text()) for f in folders}
    capsys.readouterr()
    assert table(["--study", STUDY, "--format", "json"]) == 0
    rows = {r["variant"]: r for r in json.loads(capsys.readouterr().out)}
    for t in trials():
        mine = [runs[f"t{t.number}-s{s}"] for s in (0, 1)]
        latency = rows[t.user_attrs["variant"]]["latency_ms"]
        assert latency == min(r["latency_ms"] for r in mine) > 0  # what the project's runs recorded
    assert report(["--study", STUDY]) == 0
    page = Path(f"runs/{STUDY}/report.html").read_text()
    image = lambda t, name: base64.b64encode(Path(f"runs/{STUDY}/t{t.number}-s0/{name}").read_bytes()).decode()  # noqa: E731
    assert all(image(t, "erf.png") in page for t in trials())  # every variant's lowest seed's ERF, inline
    assert image(max(trials(), key=lambda t: t.value), "predictions.png") in page  # the best variant's
    assert "no run folder of this study has per-class IoU" not in page and "plot-iou" in page
    assert '<th title="erf/r50_px">' in page and "no run folder has erf.png" not in page


def test_dry_run_resolves_every_grid_point_through_the_projects_parser(capsys):
    assert main([ABLATION, "--dry-run"]) == 0
    out = capsys.readouterr().out
    points = re.findall(r"#   \d/4 (.*) \(config (\w+)\)", out)
    assert len(points) == 4 and len({digest for _, digest in points}) == 4  # four different resolved configs
    sample = yaml.safe_load(out.split("# sample trial:")[1].split("\n", 1)[1])
    assert sample["model"]["init_args"]["neck"]["init_args"]["norm"] == "bn"  # the neck's defaults, resolved
    assert not Path("runs").exists()


def bad_sweep(**changes) -> str:
    """The example's sweep file with `changes`, written here (base: the example's config, by absolute path)."""
    spec = {**yaml.safe_load(Path(ABLATION).read_text()), "base": str(EXAMPLE / "configs/fit.yaml"), **changes}
    Path("bad.yaml").write_text(yaml.safe_dump(spec))
    return "bad.yaml"


@pytest.mark.parametrize(
    "changes, words",
    [
        (
            {"space": {"model.init_args.dropout_rate": {"choices": [0.1]}}},
            ["model.init_args.dropout_rate=0.1", "'dropout_rate' is not accepted"],
        ),
        (
            {"space": {"model.init_args.neck.class_path": {"choices": ["ablate.necks.ASPP", "absent_necks.Missing"]}}},
            ["model.init_args.neck.class_path=absent_necks.Missing", "No module named 'absent_necks'"],
        ),
        (
            {"space": {"model.init_args.dropout": {"choices": [0.1, "high"]}}},
            ["model.init_args.dropout=high", "Expected a <class 'float'>"],
        ),
        ({"cli": "seg_project.clii.MyCLI"}, ["cannot import 'seg_project.clii.MyCLI'", "No module named"]),
        ({"base": "configs/missing.yaml"}, ["base config 'configs/missing.yaml' does not exist"]),
    ],
)
def test_bad_input_is_an_error_naming_it_before_anything_is_written(changes, words, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(EXAMPLE))  # bad.yaml lives here, not in the project's folder
    assert main([bad_sweep(**changes)]) == 2
    err = capsys.readouterr().err
    assert all(w in err for w in words), err
    assert not Path("runs").exists()  # no study, no storage file, no run folder


@pytest.mark.parametrize(
    "base, signs",
    [
        ("fit.yaml", "(seed_everything, model.class_path)"),  # the example's config as it is
        ({"trainer": {"callbacks": [{"class_path": "x.Y"}]}, "optim": {"lr": 0.1}}, "(trainer.callbacks.class_path)"),
    ],
)
def test_a_sweep_file_that_forgot_cli_says_to_add_it(base, signs):
    shutil.copy(EXAMPLE / "configs/fit.yaml", "fit.yaml")
    space = {"model.init_args.dropout": {"choices": [0.0, 0.3]}}
    Path("forgot.yaml").write_text(yaml.safe_dump({"base": base, "space": space}))
    done = subprocess.run([sys.executable, "-m", "ablate.sweep", "forgot.yaml"], capture_output=True, text=True)
    assert done.returncode == 2 and done.stdout == "", done.stderr
    assert done.stderr.strip() == (
        f"error: forgot.yaml: its base looks like a LightningCLI config {signs}, not ablate's run config: add "
        "`cli: lightning.pytorch.cli.LightningCLI` (or the import path of your LightningCLI subclass) to "
        "forgot.yaml to sweep your project; without `cli` the base must be ablate's own run config"
    )
    assert not Path("runs").exists()


def test_a_built_in_base_with_a_wrong_key_keeps_its_own_error(capsys):
    Path("typo.yaml").write_text(yaml.safe_dump({"base": {"seeds": 1}, "space": {"optim.lr": {"choices": [0.1]}}}))
    assert main(["typo.yaml"]) == 2
    assert "unknown config key seeds" in capsys.readouterr().err  # no LightningCLI sign: no word about `cli`


def test_a_metric_the_module_never_logs_fails_fast_listing_what_it_logs(monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    started = time.time()
    assert main([bad_sweep(metric="val/miou"), *TINY, "trainer.max_epochs=50"]) == 1  # stopped after 2 trials
    assert time.time() - started < 60  # at the sanity check, not after 50 epochs
    first = trials()[0]
    assert first.state == TrialState.FAIL and not first.intermediate_values
    assert (
        "'val/miou' is not logged by the module; it logged: val/IoU/background, val/IoU/disc, val/IoU/square, "
        "val/acc, val/loss, val/mIoU, val/pixel_acc"  # the project's own and ablate.callbacks'
        in first.user_attrs["fail_reason"]
    )


def test_a_minimized_metric_keeps_its_least_value_and_a_rerun_into_the_same_folder_is_not_refused():
    from ablate.study.space import load_sweep
    from ablate.study.targets import make_target

    sweep = load_sweep(ABLATION, [*TINY, CSV_LOGGER, "trainer.max_epochs=3"])
    sweep = dataclasses.replace(sweep, metric="val/loss", study=dataclasses.replace(sweep.study, direction="minimize"))
    target = make_target(sweep)
    config = target.config({"model.init_args.dropout": 0.3})
    for _ in range(2):  # SaveConfigCallback overwrites config.yaml instead of refusing the second fit
        summary = target.fit(config, 0, Path(f"runs/{STUDY}/t0-s0"), callbacks=[], wandb_run=None)
    losses = csv_metric("t0-s0", "val/loss")  # the second fit's three epochs
    assert summary["val/loss_best"] == min(losses) and summary["val/loss"] == losses[-1]
    saved = json.loads(Path(f"runs/{STUDY}/t0-s0/summary.json").read_text())
    assert saved["seed"] == 0 and saved["config"]["model"]["init_args"]["dropout"] == 0.3


def test_a_trial_behind_the_median_is_pruned_before_its_last_epoch():
    from optuna.distributions import CategoricalDistribution

    from ablate.study.space import load_sweep
    from ablate.study.storage import open_study

    study = open_study(load_sweep(ABLATION), "sqlite:///runs/ablate.db")
    space = {
        "model.init_args.dropout": CategoricalDistribution([0.0, 0.3]),
        "model.init_args.neck.init_args.fusion": CategoricalDistribution(["concat", "sum"]),
    }
    for fusion in ("concat", "sum"):  # two finished trials far ahead at every epoch
        study.add_trial(
            optuna.trial.create_trial(
                params={"model.init_args.dropout": 0.0, "model.init_args.neck.init_args.fusion": fusion},
                distributions=space,
                value=0.99,
                intermediate_values={e: 0.99 for e in range(4)},
            )
        )
    assert main([ABLATION, *TINY, "trainer.max_epochs=4", "--n-trials", "3"]) == 0
    last = trials()[-1]
    assert last.state == TrialState.PRUNED and max(last.intermediate_values) < 3
    assert not Path(f"runs/{STUDY}/t{last.number}-s1").exists()  # the second seed never started


def test_sigint_mid_run_fails_and_queues_the_trial_and_the_same_command_finishes():
    args = ["trainer.max_epochs=20", "--n-trials", "2", "--seeds", "0"]
    proc = sweep(*args)
    deadline = time.time() + 120
    while not list(Path(f"runs/{STUDY}/t0-s0").glob("lightning_logs/*/config.yaml")) and time.time() < deadline:
        time.sleep(0.1)  # SaveConfigCallback wrote the config: fit has begun
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    first, queued = trials()
    assert first.state == TrialState.FAIL and first.user_attrs["interrupted"] is True
    assert queued.state == TrialState.WAITING and queued.params == first.params
    assert main([ABLATION, *TINY, *args]) == 0  # the same command
    assert [t.state for t in trials()] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]


def test_two_workers_on_sqlite_run_exactly_the_total():
    proc = sweep("--workers", "2", "--n-trials", "3", "--seeds", "0")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert out.count("started 2 workers") == 1
    done = trials()
    assert [t.state for t in done] == [TrialState.COMPLETE] * 3
    assert len({t.user_attrs["variant"] for t in done}) == 3  # no grid point twice


def test_a_ddp_trial_on_two_cpu_processes_trains_the_same_config_on_both_ranks():
    proc = sweep(
        "trainer.strategy=ddp", "trainer.devices=2", "trainer.accelerator=cpu", "--n-trials", "1", "--seeds", "0"
    )
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    (trial,) = trials()
    assert trial.state == TrialState.COMPLETE
    (digest,) = re.findall(r"  trial 0 seed 0: .* \(config (\w+)\)", out)
    assert re.search(rf"rank 1: trial 0 seed 0: .* \(config {digest}\)", out), out
    (run,) = map(run_info, Path("runs/wandb").glob("offline-run-*"))  # rank 0 alone logs to W&B
    assert run["name"] == "t0-s0" and run["exit_code"] == 0
