"""Receptive fields of the ablate necks inside any model (DeepLabv3's valid taps, Chen et al. 2017; HDC's gridding,
Wang et al. 2018) at the feature-map size each really receives, and the model's ERF (Luo et al. 2016)."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn as nn

from ablate.callbacks.convention import ConventionCallback, Misfit, split_batch
from ablate.run import analysis

ERF_IMAGES = 4  # validation images the effective receptive field is averaged over


def find_necks(model: nn.Module) -> dict[str, nn.Module]:
    """Every ablate neck in `model` by its dotted path, found by type wherever it sits: ASPP, PPM, Identity and
    whatever `create_neck` built (a registered third-party neck); a neck inside a neck is not counted again."""
    from ablate.necks import ASPP, PPM, Identity

    found = {}
    for path, m in model.named_modules():
        inside = any(path.startswith(f"{p}.") for p in found)
        if not inside and (isinstance(m, (ASPP, PPM, Identity)) or getattr(m, "neck_name", None)):
            found[path] = m
    return found


def prefixed(key: str, path: str) -> str:
    """`rf/rate6` -> `rf/<path>/rate6`, `gridding_holes` -> `<path>/gridding_holes`: one neck's key among several."""
    group, _, name = key.rpartition("/")
    return f"{group}/{path}/{name}" if group else f"{path}/{name}"


def centre_crops(images: list[torch.Tensor]) -> torch.Tensor:
    """Images (C, H, W) of possibly different sizes as one (N, C, S, S) batch, S = their smallest side."""
    side = min(min(image.shape[-2:]) for image in images)
    crops = [im[:, (im.shape[-2] - side) // 2 :, (im.shape[-1] - side) // 2 :][:, :side, :side] for im in images]
    return torch.stack(crops)


class NeckAnalysis(ConventionCallback):
    """For every ablate neck found in the model: `rf/encoder`, `rf/<branch>`, `taps9/<branch>`, `feature_px` and
    `gridding_holes` at the map it receives on the first validation batch (keys prefixed `<path>/` when there are
    several necks), and a warning when a dilation rate is degenerate there. When fit ends: the model's effective
    receptive field on the first validation images, `erf/r50_px`, `erf/r90_px` and erf.png (and W&B's val/erf)."""

    def __init__(self, erf_images: int = ERF_IMAGES, dirpath: str | None = None, strict: bool = True):
        super().__init__(dirpath, strict)
        self.erf_images, self.sizes, self.images, self.numbers, self.erf = erf_images, None, [], None, None
        self._handles = []

    def on_validation_batch_start(self, trainer, module, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        if not self.active or self.sizes is not None:
            return
        try:
            image, _ = split_batch(batch)
        except Misfit as e:
            return self.left_out(str(e))
        self.sizes = {}
        for path, neck in find_necks(module).items():
            self._handles.append(neck.register_forward_pre_hook(self._size_hook(path)))

    def _size_hook(self, path: str):
        """A forward pre-hook noting the (H, W) of the first input the neck at `path` receives."""

        def hook(module, args) -> None:
            self.sizes.setdefault(path, tuple(args[0].shape[-2:]))

        return hook

    def on_validation_batch_end(self, trainer, module, outputs, batch, batch_idx: int, dataloader_idx: int = 0):
        for handle in self._handles:
            handle.remove()
        self._handles = []
        if self.active and len(self.images) < self.erf_images:
            image, _ = split_batch(batch)
            self.images += [x.detach().cpu() for x in image[: self.erf_images - len(self.images)]]
        if self.active and self.sizes is not None and self.numbers is None:  # once, on the first batch
            self.numbers = self.analyse(module)

    def analyse(self, module: L.LightningModule) -> dict[str, float]:
        """The receptive-field numbers of each neck found, with a warning for degenerate rates."""
        necks, out = find_necks(module), {}
        for path, size in self.sizes.items():
            neck = necks[path]
            if isinstance(rates := getattr(neck, "rates", None), tuple) and (
                message := analysis.degenerate_rate_message(rates, size)
            ):
                print(f"warning: {path}: {message}", flush=True)
            rf, stride = analysis.input_receptive_field(module, neck)
            numbers = analysis.neck_summary(neck, rf, stride, size)
            out.update(numbers if len(self.sizes) == 1 else {prefixed(k, path): v for k, v in numbers.items()})
        return out

    def on_fit_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not self.active or not trainer.is_global_zero or not self.images:
            return
        try:
            self.erf = analysis.effective_receptive_field(module, centre_crops(self.images).to(module.device))
        except Exception as e:  # a forward the ERF cannot read (not (B, C, H, W) logits): the rest of the run stands
            return self.left_out(f"the effective receptive field needs forward(image) to give (B, C, H, W): {e}")
        folder = self.folder(trainer)
        folder.mkdir(parents=True, exist_ok=True)
        analysis.erf_image(self.erf).save(folder / "erf.png")
        self._to_loggers(trainer)

    def _to_loggers(self, trainer: L.Trainer) -> None:
        """The numbers to every logger; the ERF image to W&B."""
        from ablate.callbacks.convention import log_metrics

        log_metrics(trainer, self.summary())
        for logger in trainer.loggers:
            if type(logger).__name__ == "WandbLogger":
                import wandb

                caption = "effective receptive field of the final model (centre pixel)"
                logger.experiment.log({"val/erf": wandb.Image(analysis.erf_image(self.erf), caption=caption)})

    def summary(self) -> dict[str, float]:
        """The receptive-field numbers, and `erf/r50_px`, `erf/r90_px` once fit has ended."""
        out = dict(self.numbers or {})
        if self.erf is not None:
            out.update(
                {"erf/r50_px": analysis.erf_radius(self.erf, 0.5), "erf/r90_px": analysis.erf_radius(self.erf, 0.9)}
            )
        return out
