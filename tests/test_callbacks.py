"""ablate.callbacks on a project of the tests' own, with a real Trainer: dict batches, an ignore border (255), an
ablate ASPP under an attribute not called `neck`, logits smaller than the masks, a module that logs only its loss."""

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scene_project import CLASSES, SceneNet, ScenesData

from ablate.callbacks import Misfit, find_necks, segmentation_callbacks, summary


def fit(tmp_path, module, data, **kwargs):
    L.seed_everything(0, verbose=False)
    callbacks = segmentation_callbacks(**kwargs)
    trainer = L.Trainer(
        max_epochs=2,
        default_root_dir=tmp_path,
        callbacks=callbacks,
        logger=L.pytorch.loggers.CSVLogger(tmp_path, name="", version=""),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    trainer.fit(module, datamodule=data)
    return trainer


def confusion_by_hand(module, data) -> np.ndarray:
    """Counted here: the final model's predictions on every labelled validation pixel, logits resized as the
    convention says (bilinear to the mask's size)."""
    matrix = np.zeros((3, 3), np.int64)
    module.eval()
    with torch.no_grad():
        for batch in data.val_dataloader():
            logits = F.interpolate(module(batch["image"]), size=(16, 16), mode="bilinear", align_corners=False)
            pred, true = logits.argmax(1).numpy(), batch["mask"].numpy()
            for t, p in zip(true[true != 255], pred[true != 255]):
                matrix[t, p] += 1
    return matrix


def test_metrics_equal_a_confusion_count_by_hand_and_every_key_and_file_is_there(tmp_path, capsys):
    module, data = SceneNet(), ScenesData()
    trainer = fit(tmp_path, module, data)
    matrix = confusion_by_hand(module, data)
    tp = np.diag(matrix)
    iou = tp / (matrix.sum(0) + matrix.sum(1) - tp)
    logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert logged["val/mIoU"] == pytest.approx(iou.mean(), abs=1e-6)
    assert {c: logged[f"val/IoU/{c}"] for c in CLASSES} == pytest.approx(dict(zip(CLASSES, iou)), abs=1e-6)
    assert logged["val/pixel_acc"] == pytest.approx(tp.sum() / matrix.sum(), abs=1e-6)
    assert matrix.sum() == 12 * 14 * 14  # the 255 border is never scored

    numbers = summary(trainer)
    assert list(find_necks(module)) == ["context"]
    assert numbers["params/neck"] == sum(p.numel() for p in module.context.parameters()) > 0
    assert numbers["params/total"] == sum(p.numel() for p in module.parameters())
    assert numbers["gflops"] > 0 and numbers["latency_ms"] > 0
    # the stem (3x3, stride 2) sees 3 px; each atrous branch adds 2 x rate x stride 2
    assert (numbers["rf/encoder"], numbers["rf/rate1"], numbers["rf/rate2"], numbers["feature_px"]) == (3, 7, 11, 8)
    assert 0 < numbers["erf/r50_px"] <= numbers["erf/r90_px"]
    assert numbers["val/mIoU_best"] == max(float(r) for r in csv_column(tmp_path, "val/mIoU"))
    assert {f"val/IoU_best/{c}" for c in CLASSES} <= set(numbers)
    confusion = json.loads((tmp_path / "confusion.json").read_text())
    assert confusion["classes"] == CLASSES and np.array(confusion["matrix"]).sum() == 12 * 14 * 14
    shown = np.load(tmp_path / "predictions.npz")
    assert shown["images"].shape == (4, 16, 16, 3) and (shown["true"][:, 0] == 255).all()
    assert (tmp_path / "predictions.png").is_file() and (tmp_path / "erf.png").is_file()
    assert "left out" not in capsys.readouterr().err


def csv_column(folder, key: str) -> list[str]:
    import csv

    return [row[key] for row in csv.DictReader((folder / "metrics.csv").open()) if row.get(key)]


def test_a_degenerate_rate_is_reported_at_the_map_the_neck_receives(tmp_path, capsys):
    fit(tmp_path, SceneNet(rates=(1, 8)), ScenesData())  # the neck sees 8x8: rate 8 only sees padding
    out = capsys.readouterr().out
    assert "context: ASPP rates [8] are degenerate on the 8x8 feature map" in out


@pytest.mark.parametrize(
    "module,keys,reason",
    [
        (SceneNet(flat_output=True), ("image", "mask"), "forward(image) returned a tensor of shape (5, 192)"),
        (SceneNet(), ("x", "y"), "validation batches are a mapping with keys ['x', 'y']"),
    ],
)
def test_a_project_that_does_not_fit_gets_one_line_per_callback_or_an_error_when_strict(
    tmp_path, capsys, module, keys, reason
):
    trainer = fit(tmp_path / "lenient", module, ScenesData(keys), strict=False)
    err = capsys.readouterr().err
    assert "val/loss" in trainer.callback_metrics and "val/mIoU" not in trainer.callback_metrics
    for name in ("SegmentationMetrics", "Predictions"):
        (line,) = [line for line in err.splitlines() if f"ablate.callbacks.{name} left out" in line]
        assert reason in line
    (line,) = [line for line in err.splitlines() if "ablate.callbacks.NeckAnalysis left out" in line]
    assert ("the module returned Tensor (4, 192)" if "(5, 192)" in reason else reason) in line
    with pytest.raises(Misfit, match="left out"):
        fit(tmp_path / "strict", module, ScenesData(keys))


BASE = {
    "seed_everything": 0,
    "trainer": {
        "max_epochs": 2,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    },
    "model": {"class_path": "scene_project.SceneNet"},
    "data": {"class_path": "scene_project.ScenesData"},
}


def scene_sweep(name: str, metric: str = "val/mIoU", overrides=(), **keys) -> str:
    """A sweep of the scene project through LightningCLI: two rate sets, one seed; `keys` more sweep-file keys."""
    import yaml

    Path("fit.yaml").write_text(yaml.safe_dump(BASE))
    sweep = {
        "cli": "lightning.pytorch.cli.LightningCLI",
        "base": "fit.yaml",
        "overrides": list(overrides),
        "metric": metric,
        "study": {"name": name, "sampler": "grid", "pruner": "none"},
        "n_trials": 2,
        "seeds": [0],
        "space": {"model.init_args.rates": {"choices": ["[1,2]", "[1,3]"]}},
        **keys,
    }
    Path(f"{name}.yaml").write_text(yaml.safe_dump(sweep))
    return f"{name}.yaml"


def run_folders(name: str) -> list[Path]:
    from helpers import trials

    done = trials(name, "sqlite:///runs/ablate.db")
    assert [t.state.name for t in done] == ["COMPLETE"] * 2
    return [Path(f"runs/{name}/t{t.number}-s0") for t in done]


def test_a_sweep_of_a_project_that_logs_no_miou_optimizes_val_miou_and_gets_every_key_and_file(capsys):
    from ablate.sweep import main

    assert main([scene_sweep("scenes")]) == 0
    for folder in run_folders("scenes"):
        saved = json.loads((folder / "summary.json").read_text())
        matrix = np.array(json.loads((folder / "confusion.json").read_text())["matrix"])  # the best epoch's
        tp = np.diag(matrix)
        iou = tp / (matrix.sum(0) + matrix.sum(1) - tp)  # every class is in every validation set here
        assert saved["val/mIoU_best"] == pytest.approx(iou.mean(), abs=1e-6)
        assert {c: saved[f"val/IoU_best/{c}"] for c in CLASSES} == pytest.approx(dict(zip(CLASSES, iou)), abs=1e-6)
        assert {f"val/IoU/{c}" for c in CLASSES} <= set(saved) and matrix.sum() == 12 * 14 * 14
        for key in ("params/neck", "params/total", "gflops", "latency_ms", "rf/encoder", "rf/rate1", "erf/r90_px"):
            assert saved[key] > 0, key
        assert all((folder / f).is_file() for f in ("confusion.json", "predictions.png", "predictions.npz", "erf.png"))
    assert "left out" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "override,reason",
    [
        ("model.init_args.flat_output=true", "forward(image) returned a tensor of shape (5, 192)"),
        ("data.init_args.keys=[x, y]", "validation batches are a mapping with keys ['x', 'y']"),
    ],
)
def test_a_sweep_of_a_project_that_does_not_fit_runs_on_its_own_metric_and_says_why(capsys, override, reason):
    from ablate.sweep import main

    assert main([scene_sweep("misfit", "val/loss", [override])]) == 0
    err = capsys.readouterr().err
    for folder in run_folders("misfit"):
        saved = json.loads((folder / "summary.json").read_text())
        assert saved["val/loss_best"] > 0 and "val/mIoU" not in saved and not (folder / "confusion.json").exists()
    lines = [line for line in err.splitlines() if "ablate.callbacks.SegmentationMetrics left out" in line]
    assert len(lines) == 2 and all(reason in line for line in lines)  # one line a run


def test_the_sweep_file_turns_them_off_and_a_project_s_own_are_not_added_twice():
    from lightning.pytorch.cli import LightningCLI

    from ablate.study.lightning_cli import fit_cli
    from ablate.sweep import main

    assert main([scene_sweep("off", "val/loss", callbacks=False)]) == 0
    for folder in run_folders("off"):
        assert "gflops" not in json.loads((folder / "summary.json").read_text())
        assert not (folder / "predictions.png").exists()
    own = {**BASE, "trainer": {**BASE["trainer"], "callbacks": [{"class_path": "ablate.callbacks.Predictions"}]}}
    cli = fit_cli(LightningCLI, own, segmentation_callbacks(strict=False), [])
    assert [type(c).__name__ for c in cli.trainer.callbacks if type(c).__module__.startswith("ablate")] == [
        "SegmentationMetrics",
        "NeckAnalysis",
        "Efficiency",
        "Predictions",  # the project's own (strict), after the metrics it reads
    ]


def test_cpu_latency_is_measured_on_one_thread_and_leaves_threads_and_mode_as_they_were():
    """A batch-1 forward spread over threads waits on cores that other work keeps busy (a sweep training beside
    `ablate.table`: 448 ms against 7 ms on one thread); one thread, as sweep workers train, is the same on any
    machine's load."""
    from ablate.callbacks.efficiency import measure_latency_ms

    class Counting(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.threads = torch.nn.Conv2d(3, 2, 1), []

        def forward(self, x):
            self.threads.append(torch.get_num_threads())
            return self.conv(x)

    model, before = Counting(), torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert measure_latency_ms(model, 8, repeats=4) > 0
        assert model.threads == [1] * 7 and torch.get_num_threads() == 2 and model.training
    finally:
        torch.set_num_threads(before)
