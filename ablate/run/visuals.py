"""What a run shows (DeepLabv3, Chen et al. 2017): the best epoch's confusion matrix, masks on fixed images, the
final model's effective receptive field (Luo et al. 2016), config columns."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torchmetrics.classification import MulticlassConfusionMatrix

from ablate.data import IGNORE_INDEX
from ablate.run.analysis import effective_receptive_field, erf_image, erf_radius, val_images

SAMPLES = 4  # validation images shown per run: the first ones, the same for every run of the same data
ERF_IMAGES = 4  # validation images the effective receptive field is averaged over


def class_iou(matrix: np.ndarray) -> np.ndarray:
    """Per-class IoU from a confusion matrix (rows = true class); NaN where a class is in neither."""
    tp = np.diag(matrix).astype(np.float64)
    union = matrix.sum(0) + matrix.sum(1) - tp
    return np.divide(tp, union, out=np.full_like(tp, np.nan), where=union > 0)


def palette(n: int) -> np.ndarray:
    """(n, 3) uint8 colours, PASCAL VOC's: the bits of the class index spread over R, G and B."""
    colours = np.zeros((n, 3), np.uint8)
    for c in range(n):
        index, shift = c, 7
        while index:
            for channel in range(3):
                colours[c, channel] |= ((index >> channel) & 1) << shift
            index, shift = index >> 3, shift - 1
    return colours


def overlay(image: np.ndarray, mask: np.ndarray, colours: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """`image` (H, W, 3) uint8 with each labelled pixel of `mask` (H, W) blended with its class colour."""
    out = image.astype(np.float32)
    known = mask != IGNORE_INDEX
    out[known] = (1 - alpha) * out[known] + alpha * colours[mask[known]]
    return out.round().astype(np.uint8)


def to_uint8(x: torch.Tensor, mean, std) -> np.ndarray:
    """A normalized image (3, H, W) back to (H, W, 3) uint8, with the data's per-channel mean and std."""
    x = x.detach().float().cpu() * torch.as_tensor(std).reshape(-1, 1, 1) + torch.as_tensor(mean).reshape(-1, 1, 1)
    return (x.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()


def stack(arrays: list[np.ndarray], fill: int) -> np.ndarray:
    """Arrays of possibly different H, W stacked into one, padded at the bottom/right with `fill`."""
    h, w = max(a.shape[0] for a in arrays), max(a.shape[1] for a in arrays)
    out = np.full((len(arrays), h, w, *arrays[0].shape[2:]), fill, np.uint8)
    for i, a in enumerate(arrays):
        out[i, : a.shape[0], : a.shape[1]] = a
    return out


def render_predictions(images: np.ndarray, true: np.ndarray, pred: np.ndarray, classes: list[str]) -> Image.Image:
    """One row per image: image | true mask overlaid | predicted mask overlaid; below, a colour legend of the
    classes that appear. Tiny images are drawn larger, large ones (Cityscapes) at most 512 px a side."""
    colours, gap, side = palette(len(classes)), 4, max(images.shape[1:3])
    scale = max(1, 128 // side) if side <= 512 else 512 / side
    k, h, w = images.shape[0], round(images.shape[1] * scale), round(images.shape[2] * scale)
    shown = [c for c in range(len(classes)) if (true == c).any() or (pred == c).any()]
    canvas = Image.new("RGB", (3 * w + 2 * gap, k * (h + gap) + 14 * len(shown) + gap), "white")
    for i in range(k):
        tiles = (images[i], overlay(images[i], true[i], colours), overlay(images[i], pred[i], colours))
        for j, tile in enumerate(tiles):
            resized = Image.fromarray(tile).resize((w, h), Image.NEAREST if scale >= 1 else Image.BOX)
            canvas.paste(resized, (j * (w + gap), i * (h + gap)))
    draw, font = ImageDraw.Draw(canvas), ImageFont.load_default()
    for row, c in enumerate(shown):
        name, y = classes[c], k * (h + gap) + 14 * row
        draw.rectangle((2, y + 2, 12, y + 12), fill=tuple(int(v) for v in colours[c]))
        draw.text((16, y), name, fill="black", font=font)
    return canvas


class RunVisuals(L.Callback):
    """Keeps the confusion matrix (synced over DDP ranks) and the predicted masks of the first validation
    images at the epoch of the best val/mIoU; at the end of fit, rank 0 writes them to `output` and to W&B.

    Uses what `validation_step` returns: its predictions (B, H, W). Under DDP the images are the first ones
    rank 0 validates (the first of the validation set when one device validates).
    """

    def __init__(self, output: str | Path, classes: list[str], samples: int = SAMPLES):
        self.output, self.classes, self.samples = Path(output), list(classes), samples
        # validate_args=False: the module's own metrics already check the same predictions and masks
        self.confusion = MulticlassConfusionMatrix(len(classes), ignore_index=IGNORE_INDEX, validate_args=False)
        self.best_miou, self.best_epoch, self.matrix, self.shown, self.erf = None, None, None, None, None
        self._seen: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def setup(self, trainer: L.Trainer, module: L.LightningModule, stage: str) -> None:
        self.confusion = self.confusion.to(module.device)

    def on_validation_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.confusion.reset()
        self._seen = []

    def on_validation_batch_end(self, trainer, module, outputs, batch, batch_idx: int, dataloader_idx: int = 0):
        if not isinstance(outputs, torch.Tensor):
            raise TypeError(
                f"RunVisuals needs validation_step to return its predictions (B, H, W), got {type(outputs).__name__}"
            )
        x, y = batch
        self.confusion.update(outputs, y)
        dm = trainer.datamodule
        for i in range(min(len(x), self.samples - len(self._seen))):
            self._seen.append(
                (to_uint8(x[i], dm.mean, dm.std), y[i].byte().cpu().numpy(), outputs[i].byte().cpu().numpy())
            )

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        matrix = self.confusion.compute().cpu().numpy()  # every rank takes part in the sync
        if self.best_miou is None or module.best_miou > self.best_miou:  # the module keeps the best val/mIoU
            self.best_miou, self.best_epoch, self.matrix = module.best_miou, trainer.current_epoch, matrix
            self.shown = [stack(list(a), fill) for a, fill in zip(zip(*self._seen), (0, IGNORE_INDEX, IGNORE_INDEX))]

    def summary(self) -> dict[str, float]:
        """`val/IoU_best/<class>` at the best epoch, for the classes present in prediction or target."""
        if self.matrix is None:
            return {}
        out = {f"val/IoU_best/{c}": float(v) for c, v in zip(self.classes, class_iou(self.matrix)) if not np.isnan(v)}
        if self.erf is not None:
            out.update({"erf/r50_px": erf_radius(self.erf, 0.5), "erf/r90_px": erf_radius(self.erf, 0.9)})
        return out

    def on_fit_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not trainer.is_global_zero or self.matrix is None:
            return
        images = val_images(trainer.datamodule, module.cfg.data.image_size, ERF_IMAGES).to(module.device)
        self.erf = effective_receptive_field(module, images)  # of the final model, on the first val images
        self.write(self.output)
        for logger in trainer.loggers:
            if type(logger).__name__ == "WandbLogger":
                logger.experiment.log({**self.wandb_media(), "trainer/global_step": trainer.global_step})

    def write(self, output: Path) -> None:
        """confusion.json, predictions.npz and predictions.png in `output`."""
        output.mkdir(parents=True, exist_ok=True)
        (output / "confusion.json").write_text(
            json.dumps({"classes": self.classes, "epoch": self.best_epoch, "matrix": self.matrix.astype(int).tolist()})
        )
        images, true, pred = self.shown
        np.savez_compressed(
            output / "predictions.npz", images=images, true=true, pred=pred, classes=np.array(self.classes)
        )
        render_predictions(images, true, pred, self.classes).save(output / "predictions.png")
        if self.erf is not None:
            erf_image(self.erf).save(output / "erf.png")

    def wandb_media(self) -> dict:
        """`val/predictions` (images with true and predicted masks) and `val/confusion_matrix` (a W&B chart)."""
        import wandb

        labels = {**dict(enumerate(self.classes)), IGNORE_INDEX: "ignore"}
        images, true, pred = self.shown
        shown = [
            wandb.Image(
                images[i],
                caption=f"val image {i} (epoch {self.best_epoch})",
                masks={
                    "predictions": {"mask_data": pred[i], "class_labels": labels},
                    "ground_truth": {"mask_data": true[i], "class_labels": labels},
                },
            )
            for i in range(len(images))
        ]
        rows = [[a, p, int(self.matrix[i, j])] for i, a in enumerate(self.classes) for j, p in enumerate(self.classes)]
        table = wandb.Table(columns=["Actual", "Predicted", "nPredictions"], data=rows)
        chart = wandb.plot_table(
            "wandb/confusion_matrix/v1",
            table,
            {"Actual": "Actual", "Predicted": "Predicted", "nPredictions": "nPredictions"},
            {"title": f"confusion matrix (pixels), best epoch {self.best_epoch}"},
        )
        media = {"val/predictions": shown, "val/confusion_matrix": chart}
        if self.erf is not None:
            media["val/erf"] = wandb.Image(
                erf_image(self.erf), caption="effective receptive field of the final model (centre pixel)"
            )
        return media
