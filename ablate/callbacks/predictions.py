"""The first validation images with their true and predicted masks at the best epoch (as DeepLabv3's figures,
Chen et al. 2017), to predictions.png / predictions.npz and W&B."""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ablate.callbacks.convention import IGNORE_INDEX, ConventionCallback, Misfit, OutputTap, class_names, split_batch

SAMPLES = 4  # validation images shown per run: the first ones, the same for every run of the same data


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


def overlay(
    image: np.ndarray, mask: np.ndarray, colours: np.ndarray, alpha: float = 0.5, ignore_index: int = IGNORE_INDEX
) -> np.ndarray:
    """`image` (H, W, 3) uint8 with each labelled pixel of `mask` (H, W) blended with its class colour."""
    out = image.astype(np.float32)
    known = (mask != ignore_index) & (mask < len(colours))
    out[known] = (1 - alpha) * out[known] + alpha * colours[mask[known]]
    return out.round().astype(np.uint8)


def to_uint8(x: torch.Tensor, mean=None, std=None) -> np.ndarray:
    """A normalized image (C, H, W) back to (H, W, 3) uint8 with the data's per-channel mean and std; without
    them, its own range stretched to 0..255. One channel is shown grey, more than 3: the first 3."""
    x = x.detach().float().cpu()
    if mean is not None and std is not None:
        x = x * torch.as_tensor(std).reshape(-1, 1, 1) + torch.as_tensor(mean).reshape(-1, 1, 1)
    else:
        x = (x - x.min()) / (x.max() - x.min()).clamp_min(1e-12)
    x = x.expand(3, -1, -1) if x.shape[0] == 1 else x[:3]
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


class Predictions(ConventionCallback):
    """The first `samples` validation images with their true and predicted masks at the epoch of the best
    val/mIoU (the last epoch when nothing logs val/mIoU); when fit ends, rank 0 writes predictions.png and
    predictions.npz and logs `val/predictions` to W&B. Images are shown with the datamodule's `mean` and `std`
    when it has them. Under DDP the images are the first ones rank 0 validates."""

    def __init__(
        self, samples: int = SAMPLES, ignore_index: int = IGNORE_INDEX, dirpath: str | None = None, strict: bool = True
    ):
        super().__init__(dirpath, strict)
        self.samples, self.ignore_index, self.tap = samples, ignore_index, OutputTap()
        self.best, self.best_epoch, self.shown, self.classes = None, None, None, None
        self._seen: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def on_validation_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._seen = []
        if self.active:
            self.tap.attach(module)

    def on_validation_batch_start(self, trainer, module, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.tap.reset()

    def on_validation_batch_end(self, trainer, module, outputs, batch, batch_idx: int, dataloader_idx: int = 0):
        if not self.active or len(self._seen) >= self.samples:
            return self.tap.detach()
        try:
            image, mask = split_batch(batch)
            preds, n = self.tap.predictions(module, outputs, image, mask)
        except Misfit as e:
            self.tap.detach()
            return self.left_out(str(e))
        n = n or len(getattr(trainer.datamodule, "classes", None) or []) or int(preds.max()) + 1
        self.classes = self.classes or class_names(trainer.datamodule, n)
        dm = trainer.datamodule
        mean, std = getattr(dm, "mean", None), getattr(dm, "std", None)
        for i in range(min(len(image), self.samples - len(self._seen))):
            shown = to_uint8(image[i], mean, std), mask[i].byte().cpu().numpy(), preds[i].byte().cpu().numpy()
            self._seen.append(shown)

    def on_validation_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.tap.detach()

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.sanity_checking or not self._seen:
            return
        miou = trainer.callback_metrics.get("val/mIoU")
        miou = float(miou) if miou is not None else None
        if self.shown is None or miou is None or (self.best is not None and miou > self.best):
            self.best, self.best_epoch = miou, trainer.current_epoch
            self.shown = [stack(list(a), fill) for a, fill in zip(zip(*self._seen), (0, self.ignore_index, 255))]

    def on_fit_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not trainer.is_global_zero or self.shown is None:
            return
        folder = self.folder(trainer)
        folder.mkdir(parents=True, exist_ok=True)
        images, true, pred = self.shown
        classes = np.array(self.classes)
        np.savez_compressed(folder / "predictions.npz", images=images, true=true, pred=pred, classes=classes)
        render_predictions(images, true, pred, self.classes).save(folder / "predictions.png")
        for logger in trainer.loggers:
            if type(logger).__name__ == "WandbLogger":
                logger.experiment.log(
                    {"val/predictions": self.wandb_images(), "trainer/global_step": trainer.global_step}
                )

    def wandb_images(self) -> list:
        """W&B images of the shown validation images with their true and predicted masks."""
        import wandb

        labels = {**dict(enumerate(self.classes)), self.ignore_index: "ignore"}
        images, true, pred = self.shown
        return [
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
