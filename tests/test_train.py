"""One run end to end with a real Lightning Trainer: summary, reproducibility, checkpoints, W&B, CLI."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import finished_run_info as run_info

from ablate.config import ConfigError, load_config, to_dict
from ablate.run.fit import refuse_degenerate_rates, run
from ablate.run.module import SegmentationModule

KEYS = {"val/mIoU", "val/mIoU_best", "params/neck", "params/total", "gflops", "config"}


def test_run_writes_summary_and_repeats_bit_for_bit(tiny):
    cfg = load_config(None, tiny + ["trainer.max_epochs=2"])
    a, b = run(cfg, "a"), run(cfg, "b")
    assert KEYS <= set(json.loads(Path("a/summary.json").read_text()))
    assert a["val/mIoU"] == b["val/mIoU"] and a["val/mIoU_best"] == b["val/mIoU_best"]
    assert 0 <= a["val/mIoU"] <= a["val/mIoU_best"] <= 1
    assert a["params/neck"] < a["params/total"] and a["gflops"] > 0
    assert a["config"]["model"]["neck"]["rates"] == [1, 2, 3]
    assert "val/mIoU" in Path("a/metrics.csv").read_text().splitlines()[0]
    c = run(load_config(None, tiny + ["trainer.max_epochs=2", "seed=1"]), "c")
    assert c["val/mIoU"] != a["val/mIoU"]  # the seed matters


def test_checkpoint_loads_with_weights_only(tiny):
    cfg = load_config(None, [t for t in tiny if "checkpointing" not in t])
    run(cfg, "out")
    (ckpt,) = Path("out").rglob("*.ckpt")
    state = torch.load(ckpt, weights_only=True)  # hyperparameters are plain dicts and lists
    assert state["hyper_parameters"]["config"]["model"]["neck"]["name"] == "aspp"
    module = SegmentationModule.load_from_checkpoint(ckpt, weights_only=True).eval()
    assert module(torch.zeros(1, 3, 32, 32)).shape == (1, 7, 32, 32)


def test_miou_ignores_classes_absent_from_prediction_and_target():
    module = SegmentationModule(_cfg_dict(), ["a", "b", "c", "d"])
    pred = torch.tensor([[0, 0, 1, 1]])
    target = torch.tensor([[0, 1, 1, 255]])  # classes 2 and 3 absent from both; 255 ignored
    module.val_metrics.update(pred, target)
    m = module.val_metrics.compute()
    assert m["val/mIoU"].item() == pytest.approx((1 / 2 + 1 / 2) / 2)  # not divided by 4
    assert torch.isnan(m["val/IoU"][2:]).all()
    assert m["val/pixel_acc"].item() == pytest.approx(2 / 3)


def _cfg_dict():
    from ablate.config import to_dict

    return to_dict(load_config(None, ["model.neck.out_channels=8", "model.encoder_depth=3"]))


def test_degenerate_rates_are_an_error_before_training_under_strict():
    refuse_degenerate_rates(load_config(None, ["model.neck.rates=[2,16,24]"]))  # a warning, from NeckAnalysis
    with pytest.raises(ConfigError, match="degenerate.*16x16"):
        refuse_degenerate_rates(load_config(None, ["model.neck.rates=[2,16]", "model.strict=true"]))


@pytest.mark.parametrize(
    "extra",
    [
        ["data.batch_size=1", "model.neck.norm=gn"],  # batch 1 trains with GroupNorm
        ["model.head=deeplabv3plus", "model.neck.separable=true", "model.neck.fusion=sum"],
        ["model.neck={name: ppm, out_channels: 16}", "optim.name=sgd", "optim.schedule=cosine"],
        ["model.neck={name: identity, out_channels: 16}", "model.output_stride=16", "model.encoder_depth=5"],
    ],
)
def test_variants_train_end_to_end(tiny, extra):
    summary = run(load_config(None, tiny + extra), "out")
    assert summary["val/mIoU"] is not None and summary["epochs"] == 1


def test_speed_options_train_and_take_effect(tiny):
    """channels_last puts the weights in NHWC; bf16-mixed trains too (benchmarks/run.py times both)."""
    cfg = load_config(None, tiny + ["model.channels_last=true", "trainer.precision=bf16-mixed"])
    conv = SegmentationModule(to_dict(cfg), ["a"] * 7).model.encoder.conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    summary = run(cfg, "out")
    assert summary["val/mIoU"] is not None and summary["epochs"] == 1


def test_wandb_offline_run_records_config_and_summary_not_argv(tiny, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["ablate", "--storage", "postgresql+psycopg2://me:hunter2@127.0.0.1/db"])
    cfg = load_config(None, [t for t in tiny if not t.startswith("wandb")] + ["wandb.mode=offline"])
    summary = run(cfg, "out", wandb_run={"name": "t0-s0", "group": "rates=1,2,3", "tags": ["demo"]})
    (run_dir,) = Path("runs/wandb").glob("offline-run-*")
    info = run_info(run_dir)
    assert (info["name"], info["group"], info["tags"], info["exit_code"]) == ("t0-s0", "rates=1,2,3", ["demo"], 0)
    assert info["config"]["model.neck.rates"] == [1, 2, 3] and info["config"]["seed"] == 0
    assert info["summary"]["val/mIoU_best"] == pytest.approx(summary["val/mIoU_best"])
    assert info["summary"]["params/neck"] == summary["params/neck"]
    assert "val/mIoU" in info["history"][-1] or any("val/mIoU" in h for h in info["history"])
    raw = b"".join(p.read_bytes() for p in run_dir.rglob("*") if p.is_file())
    assert b"hunter2" not in raw and b"--storage" not in raw  # sys.argv is not recorded


def test_cli_help_and_clear_errors_before_training():
    ok = subprocess.run([sys.executable, "-m", "ablate.train", "--help"], capture_output=True, text=True)
    assert ok.returncode == 0 and "--output" in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "ablate.train", "model.neck.rates=[6,6]"], capture_output=True, text=True, timeout=120
    )
    assert bad.returncode == 2 and "distinct" in bad.stderr and "Traceback" not in bad.stderr
    assert not Path("runs").exists()  # nothing started


def test_wandb_mode_comes_from_the_config_else_the_environment(monkeypatch):
    from ablate.run.loggers import wandb_mode

    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode(load_config(None)) == "disabled"
    assert wandb_mode(load_config(None, ["wandb.mode=online"])) == "online"
    monkeypatch.delenv("WANDB_MODE")
    assert wandb_mode(load_config(None)) == "offline"
    monkeypatch.setenv("WANDB_MODE", "sometimes")
    with pytest.raises(ConfigError, match="WANDB_MODE='sometimes'"):
        wandb_mode(load_config(None))


def test_a_w_and_b_file_read_while_it_is_written_gives_its_complete_records_and_damage_an_error(tiny, tmp_path):
    """W&B's service writes a run's file as the run goes (a sweep's table may read it then): a file cut anywhere
    gives the records written whole before the cut; a changed byte inside it is an error naming the file."""
    from ablate.study.wandb_files import records

    cfg = load_config(None, [t for t in tiny if not t.startswith("wandb")] + ["wandb.mode=offline"])
    run(cfg, "out", wandb_run={"name": "t0-s0"})
    run_info(next(Path("runs/wandb").glob("offline-run-*")))  # once the service has written the exit record
    (path,) = Path("runs/wandb").glob("offline-run-*/run-*.wandb")
    data, cut = path.read_bytes(), tmp_path / "cut.wandb"
    cut.write_bytes(data)
    whole = records(cut)  # of the very bytes that are cut below, not a second read of the file
    assert len(data) > 32768 and whole[-1].WhichOneof("record_type") == "exit"  # it spans blocks, and it is done
    for end in range(7, len(data), 997):  # cuts inside headers, data and records that span a block boundary
        cut.write_bytes(data[:end])
        got = records(cut)
        assert [r.SerializeToString() for r in got] == [r.SerializeToString() for r in whole[: len(got)]]
        assert len(got) < len(whole)
    damaged = bytearray(data)
    damaged[7 + 7 + 1] ^= 0xFF  # inside the first chunk's data (after the file's and the chunk's 7-byte headers)
    cut.write_bytes(bytes(damaged))
    with pytest.raises(ValueError, match="cut.wandb: the chunk at byte .* fails its checksum"):
        records(cut)
