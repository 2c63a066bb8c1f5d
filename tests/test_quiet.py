"""The main job's console: a line a trial, a line an epoch, the table; the rest goes to each run's log."""

import os
import subprocess
import sys
import warnings

from helpers import ROOT, TINY

from ablate import cli
from ablate.study.space import write_sweep


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
