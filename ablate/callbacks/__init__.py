"""Lightning callbacks that show, for any segmentation LightningModule, what ablate shows for its own model:
mIoU and per-class IoU (DeepLabv3, Chen et al. 2017), predictions, receptive fields and ERF of its necks (ablate's
by type, any ASPP-like module by structure: find_necks), params, GFLOPs and latency. Each reads the module, the
datamodule and the batch (ablate.callbacks.convention), never ablate's run config, so any project lists them in
`trainer.callbacks` by `class_path: ablate.callbacks.X`."""

from ablate.callbacks.convention import ConventionCallback, Misfit, summary
from ablate.callbacks.efficiency import Efficiency
from ablate.callbacks.metrics import SegmentationMetrics
from ablate.callbacks.necks import NeckAnalysis, find_necks
from ablate.callbacks.predictions import Predictions

__all__ = [
    "ConventionCallback",
    "Efficiency",
    "Misfit",
    "NeckAnalysis",
    "Predictions",
    "SegmentationMetrics",
    "find_necks",
    "segmentation_callbacks",
    "summary",
]


def segmentation_callbacks(*, strict: bool = True, dirpath: str | None = None, necks=None) -> list:
    """All four, in the order they must run: the metrics first (Predictions keeps the images of the best
    val/mIoU they log), then predictions, neck analysis and efficiency; `necks` (dotted paths) names the modules
    the last two read as necks instead of those `find_necks` finds."""
    return [
        SegmentationMetrics(dirpath=dirpath, strict=strict),
        Predictions(dirpath=dirpath, strict=strict),
        NeckAnalysis(dirpath=dirpath, strict=strict, necks=necks),
        Efficiency(dirpath=dirpath, strict=strict, necks=necks),
    ]
