"""ablate.callbacks on a project of the tests' own, with a real Trainer: dict batches, an ignore border (255), an
ablate ASPP under an attribute not called `neck`, logits smaller than the masks, a module that logs only its loss."""

import json

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from ablate.callbacks import Misfit, find_necks, segmentation_callbacks, summary
from ablate.necks import ASPP

CLASSES = ["sky", "road", "car"]


class Scenes(Dataset):
    """16x16 images of three horizontal bands (sky, road, car) whose heights vary; a 1-pixel border of 255."""

    def __init__(self, n: int, seed: int, keys=("image", "mask")):
        g = torch.Generator().manual_seed(seed)
        self.items, self.keys = [], keys
        for _ in range(n):
            cut = torch.randint(4, 8, (2,), generator=g)
            mask = torch.zeros(16, 16, dtype=torch.long)
            mask[cut[0] :], mask[cut[0] + cut[1] :] = 1, 2
            image = torch.randn(3, 16, 16, generator=g) * 0.5 + F.one_hot(mask, 3).permute(2, 0, 1)
            mask[0, :], mask[-1, :], mask[:, 0], mask[:, -1] = 255, 255, 255, 255
            self.items.append((image, mask))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        return dict(zip(self.keys, self.items[i]))


class ScenesData(L.LightningDataModule):
    classes = CLASSES

    def __init__(self, keys=("image", "mask")):
        super().__init__()
        self.keys = keys

    def train_dataloader(self):
        return DataLoader(Scenes(16, 0, self.keys), batch_size=4, shuffle=True)

    def val_dataloader(self):
        return DataLoader(Scenes(12, 1, self.keys), batch_size=5)


class SceneNet(L.LightningModule):
    """Stride-2 conv -> ASPP as `self.context` -> 1x1 classifier; logits at half the mask size; logs its loss only."""

    def __init__(self, rates=(1, 2), flat_output: bool = False):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU())
        self.context = ASPP(8, out_channels=8, rates=rates, dropout=0.0)
        self.head = nn.Conv2d(8, 3, 1)
        self.flat_output = flat_output

    def forward(self, x):  # (B, 3, 16, 16) -> (B, 3, 8, 8)
        logits = self.head(self.context(self.stem(x)))
        return logits.flatten(1) if self.flat_output else logits

    def step(self, batch):
        image, mask = batch[next(iter(batch))], batch[list(batch)[1]]
        logits = F.interpolate(self(image).view(len(image), 3, 8, 8), size=mask.shape[-2:], mode="bilinear")
        return F.cross_entropy(logits, mask, ignore_index=255)

    def training_step(self, batch, batch_idx):
        loss = self.step(batch)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self.step(batch))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.05)


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
    with pytest.raises(Misfit, match="left out"):
        fit(tmp_path / "strict", module, ScenesData(keys))
