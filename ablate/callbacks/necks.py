"""Receptive fields of the necks inside any model, ablate's or ASPP-like ones found by structure (DeepLabv3's valid
taps, Chen et al. 2017; HDC's gridding, Wang et al. 2018) at the feature-map size each receives, and the model's
ERF (Luo et al. 2016)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import lightning as L
import torch
import torch.nn as nn

from ablate.callbacks.convention import ConventionCallback, Misfit, split_batch
from ablate.necks.swap import find_submodule
from ablate.run import analysis, neck_structure
from ablate.run.neck_structure import Branches, Trace, inside

ERF_IMAGES = 4  # validation images the effective receptive field is averaged over


def find_necks(
    model: nn.Module, example: torch.Tensor | None = None, paths: Sequence[str] | None = None
) -> dict[str, nn.Module]:
    """Every neck in `model` by its dotted path, wherever it sits; a neck inside a neck is not counted again.

    Found by type: ablate's ASPP, PPM, Identity and whatever `create_neck` built (a registered third-party neck).
    Found by structure: any ASPP-like module (torchvision's, smp's, a copy, one written by hand): >= 2 parallel 3x3
    convs of distinct dilations reading the same tensor, seen by running `model` once on zeros shaped as one image
    of `example` (default: its `example_input_array`, else a (1, 3, 64, 64) image); the innermost module holding
    them is the neck. A model whose forward fails on that gets only the necks found by type and mark.
    Marked: a class or instance attribute `ablate_neck = True` makes a module a neck; `ablate_neck = False` keeps it
    and everything inside it from being found by type or structure. `paths` (dotted, e.g. ["decoder.0"]) names the
    necks instead: those modules only, whatever they are."""
    return {path: found.module for path, found in locate_necks(model, example, paths).items()}


class Found(NamedTuple):
    """A neck `find_necks` found: the module, the Branches its structure shows (None for ablate's own types, which
    the analysis reads by type, and for a named or marked module without parallel branches: it only counts in
    `params/neck`), and the (H, W) of the map it received in the trace (None when the forward did not run it)."""

    module: nn.Module
    branches: Branches | None
    size: tuple[int, int] | None


def locate_necks(
    model: nn.Module, example: torch.Tensor | None = None, paths: Sequence[str] | None = None
) -> dict[str, Found]:
    """find_necks, each neck as a Found: with its Branches and input size from the one traced forward."""
    from ablate.necks import ASPP, PPM, Identity

    modules, seen = dict(model.named_modules()), _trace(model, example)
    structural = {p: b for p, b in seen.aspp_like().items() if p}  # the model itself is never its own neck
    if paths:
        for path in paths:
            find_submodule(model, path)  # an unknown path raises, naming the nearest valid ones
        candidates = set(paths)
    else:
        hidden = [p for p, m in modules.items() if getattr(m, "ablate_neck", None) is False]
        candidates = {p for p, m in modules.items() if (_declared(m) or p in structural) and _shown(p, m, hidden)}
    chosen = _outermost(p for p in modules if p in candidates)
    out = {}
    for p in chosen:
        own = isinstance(modules[p], (ASPP, PPM, Identity))
        out[p] = Found(modules[p], None if own else structural.get(p) or seen.branches_in(p), seen.sizes.get(p))
    return out


def _declared(module: nn.Module) -> bool:
    """A neck by its mark (`ablate_neck`) or by type: ablate's ASPP, PPM, Identity or a `create_neck` neck."""
    from ablate.necks import ASPP, PPM, Identity

    mark = getattr(module, "ablate_neck", None)
    if mark is not None:
        return bool(mark)
    return isinstance(module, (ASPP, PPM, Identity)) or bool(getattr(module, "neck_name", None))


def _shown(path: str, module: nn.Module, hidden: list[str]) -> bool:
    """Whether a candidate neck may be reported: marked `ablate_neck = True`, or inside no module marked False."""
    if getattr(module, "ablate_neck", None) is True:
        return True
    return not any(inside(path, h) for h in hidden) and path != ""


def _outermost(paths) -> list[str]:
    """`paths` (parents before children, as named_modules lists them) without those inside one already kept."""
    kept = []
    for path in paths:
        if not any(inside(path, k) for k in kept):
            kept.append(path)
    return kept


def _trace(model: nn.Module, example: torch.Tensor | None) -> Trace:
    """The model's trace (neck_structure.trace); an empty one when its forward fails on the probe."""
    try:
        return neck_structure.trace(model, example)
    except Exception:  # a forward that cannot run on one zero image: only the necks found by type and mark
        return Trace()


def _are_rates(rates) -> bool:
    """Whether `rates` (a neck's `.rates`, or those its structure shows) is a tuple of positive ints."""
    return isinstance(rates, tuple) and all(isinstance(r, int) and not isinstance(r, bool) and r > 0 for r in rates)


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
    """For every neck found in the model (`find_necks`: ablate's by type, any ASPP-like module by structure, modules
    marked `ablate_neck = True`): `rf/encoder`, `rf/<branch>` (`1x1`, `rate<r>`, `image_pool`, PPM's `bin<b>`),
    `taps9/<branch>`, `feature_px` and `gridding_holes` at the map it receives on the first validation batch (keys
    prefixed `<path>/` when there are several necks), and a warning when a dilation rate is degenerate there. When
    fit ends: the model's effective receptive field on the first validation images, `erf/r50_px`, `erf/r90_px` and
    erf.png (and W&B's val/erf).

    `necks`: dotted paths of the modules to analyse (e.g. `["decoder.0"]`, as `print(model)` names them) instead of
    those found; a module with no parallel 3x3 branches gets no receptive-field keys, only `params/neck` in
    Efficiency (give it the same `necks`). To mark a class instead: `ablate_neck = True` (always a neck) or
    `ablate_neck = False` (neither it nor anything inside it is found by type or structure)."""

    def __init__(
        self,
        erf_images: int = ERF_IMAGES,
        dirpath: str | None = None,
        strict: bool = True,
        necks: Sequence[str] | None = None,
    ):
        super().__init__(dirpath, strict)
        self.erf_images, self.images, self.numbers, self.erf = erf_images, [], None, None
        self.necks = list(necks) if necks else None

    def on_validation_batch_end(self, trainer, module, outputs, batch, batch_idx: int, dataloader_idx: int = 0):
        if not self.active:
            return
        try:
            image, _ = split_batch(batch)
        except Misfit as e:
            return self.left_out(str(e))
        if len(self.images) < self.erf_images:
            self.images += [x.detach().cpu() for x in image[: self.erf_images - len(self.images)]]
        if self.numbers is None:  # once, on the first batch, after the step (a forward of its own here is unseen)
            self.numbers = self.analyse(module, image)

    def analyse(self, module: L.LightningModule, image: torch.Tensor | None = None) -> dict[str, float]:
        """The receptive-field numbers of each neck found (run on one image shaped as `image`'s), with a warning for
        degenerate rates at the map each receives."""
        found, out = locate_necks(module, image, self.necks), {}
        ran = {path: f for path, f in found.items() if f.size is not None}
        for path, (neck, branches, size) in ran.items():
            rates = branches.rates if branches is not None else getattr(neck, "rates", None)
            if _are_rates(rates) and (message := analysis.degenerate_rate_message(rates, size)):
                print(f"warning: {path}: {message}", flush=True)
            rf, stride = analysis.input_receptive_field(module, neck)
            numbers = analysis.neck_summary(neck, rf, stride, size, branches)
            out.update(numbers if len(ran) == 1 else {prefixed(k, path): v for k, v in numbers.items()})
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
