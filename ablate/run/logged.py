"""What a run logged: every scalar metric under its own name, as the last validation left it and as it was at the
epoch where the run's objective was best (the epoch a ModelCheckpoint on that metric keeps)."""

from __future__ import annotations

import math

import lightning as L

from ablate.errors import ConfigError


def scalars(metrics: dict) -> dict[str, float]:
    """The one-number entries of Lightning's `callback_metrics` (tensors of one element, numbers) as floats."""
    out = {}
    for key, value in metrics.items():
        numel = getattr(value, "numel", lambda: 1)()
        if numel == 1 and not isinstance(value, (bool, str)):
            try:
                out[key] = float(value)
            except (TypeError, ValueError):
                continue
    return out


class LoggedMetrics(L.Callback):
    """Best `metric` over validation epochs (max or min by `direction`) and every scalar logged, at that best epoch
    (`at_best`); a metric the module never logs, a non-finite one or a non-finite logged loss stops the run at the
    first validation that shows it."""

    def __init__(self, metric: str, direction: str = "maximize"):
        self.metric, self.sign = metric, 1 if direction == "maximize" else -1
        self.best, self.last, self.at_best = None, None, {}

    def on_sanity_check_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.callback_metrics:  # the sanity check logged something: the metric must be among it
            self._read(trainer)

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = self._read(trainer)
        self.last = value
        if self.best is None or self.sign * (value - self.best) > 0:
            self.best, self.at_best = value, scalars(trainer.callback_metrics)

    def _read(self, trainer: L.Trainer) -> float:
        metrics = trainer.callback_metrics
        if self.metric not in metrics:
            raise ConfigError(
                f"metric {self.metric!r} is not logged by the module; it logged: "
                f"{', '.join(sorted(metrics)) or 'nothing'} (set `metric` in the sweep file)"
            )
        for key in (self.metric, *(k for k in metrics if "loss" in k)):
            if not math.isfinite(float(metrics[key])):
                raise FloatingPointError(f"{key} is {float(metrics[key])} at epoch {trainer.current_epoch}")
        return float(metrics[self.metric])

    def summary(self, trainer: L.Trainer) -> dict:
        """Every scalar logged, last value under its own name; `<metric>` (last validation), `<metric>_best`, and
        `at_best`: every scalar at the epoch of the best `metric`."""
        return {
            **scalars(trainer.callback_metrics),
            self.metric: self.last,
            f"{self.metric}_best": self.best,
            "at_best": self.at_best,
        }
