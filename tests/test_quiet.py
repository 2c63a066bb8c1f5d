"""The main job's console: a line a trial, a line an epoch, the table; the rest goes to each run's log."""

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from helpers import ROOT, TINY
from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar

from ablate import cli
from ablate.study.lightning_cli import quiet_trainer
from ablate.study.space import write_sweep

EXAMPLE = ROOT / "examples/lightning_project"
SMALL = [  # the example project's own config, a few seconds a run; its model summary and progress bar left unset
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "data.init_args.train_size=16",
    "data.init_args.val_size=8",
    "data.init_args.batch_size=8",
]
UNSET = {"enable_model_summary": None, "enable_progress_bar": None, "callbacks": []}  # Lightning's defaults
NO_TENSORBOARD = (  # Lightning where neither tensorboard nor tensorboardX is installed: its default logger warns
    "import runpy; from lightning.pytorch.trainer.connectors.logger_connector import logger_connector as c; "
    "c._TENSORBOARD_AVAILABLE = c._TENSORBOARDX_AVAILABLE = False; "
    "runpy.run_module('ablate.sweep', run_name='__main__')"
)


def test_a_sweep_prints_a_line_a_trial_and_an_epoch_and_logs_the_rest_in_the_run_folder():
    overrides = [o for o in TINY if "model_summary" not in o and "wandb" not in o]  # Lightning's defaults
    overrides += ["trainer.max_epochs=2", "trainer.log_every_n_steps=1", "wandb.mode=offline"]
    space = {"model.neck.fusion": {"choices": ["concat"]}}
    write_sweep(
        "s.yaml", space, base=ROOT / "experiments/base.yaml", overrides=overrides, n_trials=1, seeds=[0], name="t"
    )
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SILENT"}
    proc = subprocess.run(
        [sys.executable, "-m", "ablate.sweep", "s.yaml"], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    console = proc.stdout + proc.stderr
    for noise in ("Total FLOPs", "Trainable params", "LeafSpec", "anonymous", "GPU available", "Tip:"):
        assert noise not in console, noise
    lines = console.splitlines()
    assert len([line for line in lines if line.startswith("epoch ")]) == 2
    assert len([line for line in lines if "trial 0 seed 0: model.neck.fusion=concat" in line]) == 1
    assert len([line for line in lines if line.startswith("[1/1] trial 0 complete = ")]) == 1
    assert "study t: mean ± std over seeds" in console
    log = open("runs/t/t0-s0/run.log", encoding="utf-8").read()
    assert "GPU available" in log and "`Trainer.fit` stopped: `max_epochs=2` reached" in log


def test_noise_warnings_reach_only_the_run_log_and_others_the_console_once(tmp_path):
    shown = []
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, *args, **kwargs: shown.append(str(message))  # the console
        cli.quiet_dependencies()
        for folder in ("a", "b"):
            with cli.run_log(tmp_path / folder):
                warnings.warn(
                    "`isinstance(treespec, LeafSpec)` is deprecated, use ...", DeprecationWarning, stacklevel=1
                )
                warnings.warn("set data.batch_size to fit your GPU", UserWarning, stacklevel=1)
    assert shown == ["set data.batch_size to fit your GPU"]
    for folder in ("a", "b"):
        log = (tmp_path / folder / cli.RUN_LOG).read_text()
        assert "LeafSpec" in log and "set data.batch_size to fit your GPU" in log


def test_a_lightning_cli_sweep_prints_no_model_summary_no_progress_bar_and_logs_dependency_warnings_in_the_run():
    args = [str(EXAMPLE / "ablation.yaml"), "--n-trials", "1", "--seeds", "0", *SMALL]
    env = {**os.environ, "WANDB_MODE": "disabled"}
    proc = subprocess.run(
        [sys.executable, "-c", NO_TENSORBOARD, *args], capture_output=True, text=True, env=env, timeout=600
    )  # piped: not a terminal
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    console = proc.stdout + proc.stderr
    summary, bar = ("Total params", "Trainable params", "┃ Name", "| Name"), ("Epoch ", "it/s", " • ", "v_num")
    for noise in (*summary, *bar, "tensorboardX"):
        assert noise not in console, noise
    assert len([line for line in console.splitlines() if line.startswith("  trial 0 seed 0: ")]) == 1
    assert "[1/1] trial 0 complete = " in console
    log = (Path("runs/lightning_project/t0-s0") / cli.RUN_LOG).read_text()
    assert "`tensorboardX` has been removed as a dependency" in log and "GPU available" in log


@pytest.mark.parametrize(
    "trainer, defaults, kept",
    [
        ({"enable_model_summary": True, "enable_progress_bar": True}, {}, {}),  # the project's own choice
        ({"enable_model_summary": False, "enable_progress_bar": False}, {}, {}),
        ({**UNSET, "callbacks": [TQDMProgressBar()]}, {}, {"enable_model_summary": False}),  # a bar it lists stays
        ({**UNSET, "callbacks": None}, {"callbacks": RichProgressBar()}, {"enable_model_summary": False}),  # its CLI's
        ({"callbacks": []}, {}, {}),  # a Trainer class without these arguments gets none
    ],
)
def test_what_a_project_sets_stays_and_only_what_it_leaves_unset_is_quietened(trainer, defaults, kept):
    assert quiet_trainer(trainer, defaults) == kept


def test_a_model_summary_and_bar_left_unset_are_off_and_the_bar_on_only_on_a_terminal_of_ones_own():
    assert quiet_trainer(UNSET, {}) == {"enable_model_summary": False, "enable_progress_bar": sys.stdout.isatty()}
    with cli.labelled("t0 s0"):  # a worker sharing a terminal: its own lines, never a bar
        assert quiet_trainer(UNSET, {})["enable_progress_bar"] is False
