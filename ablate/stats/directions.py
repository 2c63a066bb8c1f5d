"""Each metric's direction (given, else inferred from its name: losses and errors minimize) and the unit its
differences are shown in (points, 1/100, for fractions such as mIoU; else the metric's own units)."""

from __future__ import annotations

import math
import re

MINIMIZED = (  # words of a metric's name that say lower is better
    *("loss", "error", "err", "mse", "mae", "rmse", "nll", "perplexity", "ppl", "latency", "time", "wer", "cer"),
    *("ece", "aece", "brier", "aurc"),  # calibration errors and the area under the risk-coverage curve
)
FRACTIONS = (  # metrics in [0, 1]: a difference of 0.01 is one point
    "miou",
    "iou",
    "jaccard",
    "acc",
    "accuracy",
    "f1",
    "fscore",
    "dice",
    "precision",
    "recall",
    "auroc",
    "ap",
    "map",
    "specificity",
    "sensitivity",
)


def name_words(metric: str) -> list[str]:
    """'val/MulticlassAccuracy' -> ['val', 'multiclassaccuracy', 'multiclass', 'accuracy']: the lower-case words
    between separators, each also split at its camelCase humps (so 'mIoU' is 'miou' whole)."""
    words = []
    for part in re.split(r"[^A-Za-z0-9]+", metric):
        words.append(part.lower())
        words += [w.lower() for w in re.findall(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])", part)]
    return [w for w in words if w]


def infer_direction(metric: str) -> str:
    """'minimize' when a word of the name says a loss, an error or a cost (MINIMIZED), else 'maximize'."""
    return "minimize" if any(w in MINIMIZED for w in name_words(metric)) else "maximize"


def metric_direction(metric: str, given: str | None = None) -> tuple[str, str]:
    """(direction, how it was chosen): `given` when there is one, else inferred from the name."""
    if given:
        return given, "given"
    return infer_direction(metric), "inferred from its name"


def is_fraction(metric: str, values=()) -> bool:
    """True for a metric in [0, 1] by its name (IoU, accuracy, F1, Dice, ...) that is not a loss or an error, and by
    its `values` when given: one outside [0, 1] (an mIoU in percent) makes it a metric in its own units."""
    words = name_words(metric)
    named = any(w in FRACTIONS for w in words) and not any(w in MINIMIZED for w in words)
    return named and all(0 <= v <= 1 for v in values if isinstance(v, (int, float)) and math.isfinite(v))


def delta_scale(metric: str, values=()) -> float:
    """What a difference of `metric` is multiplied by to show it: 100 (points) for fractions, else 1."""
    return 100.0 if is_fraction(metric, values) else 1.0


def delta_unit(metric: str, values=()) -> str:
    """What a difference of `metric` is shown in: 'points' for fractions, else the metric itself (its own units)."""
    return "points" if is_fraction(metric, values) else metric


def values_of(rows: list[dict]) -> list[float]:
    """Every seed's value of a table's rows (what tells a fraction from a metric in its own units)."""
    return [v for r in rows for v in r.get("seeds", {}).values()]
