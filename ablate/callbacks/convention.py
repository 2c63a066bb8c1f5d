"""The convention ablate's callbacks read any LightningModule by: validation batches `(image, mask)` or a mapping
with `image` and `mask`; `forward(image)` gives `(B, C, H, W)` logits; class names from the datamodule's `classes`;
masks label 255 as ignored (the VOC convention of DeepLabv3, Chen et al. 2017)."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

IGNORE_INDEX = 255  # the mask label that is never scored


class Misfit(Exception):
    """A run that does not follow the convention; the message says how."""


def describe(value) -> str:
    """A short description of a batch or an output: a tensor's shape and dtype, a mapping's keys, a type."""
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)} ({value.dtype})"
    if isinstance(value, Mapping):
        return f"a mapping with keys {sorted(map(str, value))}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}: " + ", ".join(describe(v) for v in value[:3])
    return f"a {type(value).__name__}"


def split_batch(batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(image (B, C, H, W), mask (B, H, W)) of a validation batch (a mask (B, 1, H, W) loses its channel); Misfit
    naming what the batch is otherwise."""
    if isinstance(batch, Mapping) and {"image", "mask"} <= batch.keys():
        image, mask = batch["image"], batch["mask"]
    elif isinstance(batch, (tuple, list)) and len(batch) == 2:
        image, mask = batch
    else:
        raise Misfit(f"validation batches are {describe(batch)}, not (image, mask) nor a mapping with image and mask")
    ok = isinstance(image, torch.Tensor) and isinstance(mask, torch.Tensor)
    if ok and mask.ndim == 4 and mask.shape[1] == 1:  # (B, 1, H, W), as torchvision's v2 Mask batches come
        mask = mask[:, 0]
    if not ok or image.ndim != 4 or mask.ndim != 3 or image.shape[0] != mask.shape[0] or mask.is_floating_point():
        raise Misfit(
            f"validation batches hold image {describe(image)} and mask {describe(mask)}, "
            "not an image (B, C, H, W) and an integer mask (B, H, W)"
        )
    return image, mask


def predicted_classes(output, mask: torch.Tensor) -> tuple[torch.Tensor, int | None]:
    """(predicted class per pixel (B, H, W), number of classes or None) from logits (B, C, h, w), bilinearly
    resized to the mask's size when smaller, or from class ids (B, H, W); Misfit naming the output otherwise."""
    b, h, w = mask.shape
    if isinstance(output, torch.Tensor) and output.ndim == 3 and output.shape == mask.shape:
        if not output.is_floating_point():
            return output, None  # class ids, as ablate's own validation_step returns them
    if not (isinstance(output, torch.Tensor) and output.ndim == 4 and output.shape[0] == b and output.shape[1] > 1):
        raise Misfit(f"forward(image) returned {describe(output)}, not (B, C, H, W) logits for masks {(b, h, w)}")
    if output.shape[-2] > h or output.shape[-1] > w:
        raise Misfit(f"forward(image) returned logits of {tuple(output.shape)}, larger than the masks {(b, h, w)}")
    if output.shape[-2:] != mask.shape[-2:]:
        output = F.interpolate(output.float(), size=(h, w), mode="bilinear", align_corners=False)
    return output.max(1).indices, output.shape[1]  # = argmax(1), 3-6x faster on the CPU (torch 2.14)


def check_labels(mask: torch.Tensor, classes: int, ignore_index: int) -> None:
    """Misfit when the mask holds a label that is neither a class id below `classes` nor `ignore_index`."""
    bad = mask[(mask != ignore_index) & ((mask < 0) | (mask >= classes))]
    if bad.numel():
        raise Misfit(
            f"masks hold label {int(bad[0])}, not a class id below {classes} nor the ignore label {ignore_index}"
        )


def class_names(datamodule, n: int) -> list[str]:
    """The datamodule's `classes` (a list of n names) when it has them, else '0' .. 'n-1'."""
    names = getattr(datamodule, "classes", None)
    if isinstance(names, (list, tuple)) and len(names) == n and all(isinstance(c, str) for c in names):
        return list(names)
    return [str(c) for c in range(n)]


class ConventionCallback(L.Callback):
    """A callback that reads the module, datamodule and batch by the convention above.

    `strict=True` (listed in a project's own config): a run that does not fit raises, naming the reason.
    `strict=False` (added by ablate's sweep): it prints one line naming the callback and the reason, and stops.
    Its numbers come back from `summary()`; its files go to `dirpath` (default: the trainer's default_root_dir).
    """

    def __init__(self, dirpath: str | None = None, strict: bool = True):
        self.dirpath, self.strict, self.active = dirpath, strict, True

    def left_out(self, reason: str) -> None:
        """Stop this callback for the run: raise under `strict`, else print one line saying why."""
        text = f"ablate.callbacks.{type(self).__name__} left out: {reason}"
        if self.strict:
            raise Misfit(text)
        self.active = False
        print(text, file=sys.stderr, flush=True)

    def folder(self, trainer: L.Trainer) -> Path:
        """Where this callback writes its files."""
        return Path(self.dirpath or trainer.default_root_dir)

    def summary(self) -> dict[str, float]:
        """What the run summary gets from this callback (flat numbers)."""
        return {}


def log_metrics(trainer: L.Trainer, metrics: dict) -> None:
    """`metrics` to every logger at the step Lightning's own logging uses (as LearningRateMonitor does)."""
    if not metrics or trainer.sanity_checking:
        return
    step = trainer.fit_loop.epoch_loop._batches_that_stepped
    for logger in trainer.loggers:
        logger.log_metrics(metrics, step=step)


def summary(trainer: L.Trainer) -> dict[str, float]:
    """The merged `summary()` of every ablate callback on `trainer` (ablate's runs put it in summary.json)."""
    out = {}
    for callback in trainer.callbacks:
        if isinstance(callback, ConventionCallback):
            out.update(callback.summary())
    return out


class OutputTap:
    """The first output of `module`'s forward in each validation batch, seen with a forward hook."""

    def __init__(self):
        self.output, self._handle = None, None

    def attach(self, module: L.LightningModule) -> None:
        self.detach()
        self._handle = module.register_forward_hook(self._keep)

    def detach(self) -> None:
        if self._handle is not None:
            self._handle.remove()
        self._handle, self.output = None, None

    def reset(self) -> None:
        """Forget the last batch's output (at each validation batch start)."""
        self.output = None

    def _keep(self, module, args, output) -> None:
        if self.output is None:
            self.output = output

    def predictions(self, module, outputs, image: torch.Tensor, mask: torch.Tensor):
        """(predicted classes (B, H, W), classes or None): validation_step's return value when it is predictions,
        else the forward output seen in the step, else a forward pass of our own."""
        seen, self.output = self.output, None
        for candidate in (outputs, seen):
            try:
                return predicted_classes(candidate, mask)
            except Misfit:
                continue
        if seen is None:
            with torch.no_grad():
                seen = module(image)
            self.output = None
        return predicted_classes(seen, mask)
