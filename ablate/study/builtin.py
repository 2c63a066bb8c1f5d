"""The built-in target: a trial's values set dotted keys of ablate's run config, and `ablate.run.fit` trains it."""

from __future__ import annotations

from pathlib import Path

import yaml

from ablate.config import RunConfig, from_dict, set_dotted, to_dict
from ablate.errors import ConfigError
from ablate.study.space import SweepConfig


class BuiltinTarget:
    """ablate's own SegmentationModel on its own data (the run config of `experiments/base.yaml`)."""

    metric = "val/mIoU"

    def __init__(self, sweep: SweepConfig):
        self.sweep = sweep
        from_dict(sweep.base)  # the base itself must be valid, whatever the space sets

    def config(self, params: dict) -> dict:
        """The run config of a trial: the base with each dotted key set (rates strings decoded to lists)."""
        return to_dict(trial_config(self.sweep, params))

    def check(self) -> None:
        """Files on disk are read and checked, and the training code imported, before any trial starts (forked
        workers inherit both: the built-in data of the base config is generated once)."""
        import ablate.run.fit  # noqa: F401
        from ablate.data import create_datamodule

        create_datamodule(from_dict(self.sweep.base))

    def memory_bytes(self) -> int:
        """About what one trial of the base config holds on its device (for `--workers auto`): the parameters four
        times (weights, gradients, AdamW's two moments), every layer's output for one batch (kept for backward;
        measured on the meta device, nothing allocated) times 1.5 for autograd's temporaries, the data if
        `data.on_device`."""
        import torch

        from ablate.callbacks.efficiency import count_params
        from ablate.data import create_datamodule
        from ablate.run.model import SegmentationModel

        cfg, outputs = from_dict(self.sweep.base), []
        dm, m = create_datamodule(cfg), cfg.model  # the base config's data: generated or read once
        with torch.device("meta"):
            model = SegmentationModel(
                encoder=m.encoder,
                classes=len(dm.classes),
                neck=m.neck,
                encoder_depth=m.encoder_depth,
                output_stride=m.output_stride,
                head=m.head,
            )  # encoder_weights=None: the same size, nothing read
            for layer in model.modules():
                if not list(layer.children()):
                    layer.register_forward_hook(lambda _, __, y: outputs.append(y.nbytes))
            model(torch.zeros(cfg.data.batch_size, 3, cfg.data.image_size, cfg.data.image_size))
        data = [dm.train_set, dm.val_set] if cfg.data.on_device else []
        data_bytes = sum(s.images.nbytes + s.masks.nbytes for s in data)
        return 16 * count_params(model) + int(1.5 * sum(outputs)) + data_bytes

    def fit(self, config: dict, seed: int, output: Path, *, callbacks: list, wandb_run: dict | None) -> dict:
        """Train `config` with `seed` into `output` (no W&B run when `wandb_run` is None)."""
        from ablate.run.fit import run

        raw = {**config, "seed": seed}
        if wandb_run is None:
            raw["wandb"] = {**raw["wandb"], "mode": "disabled"}
        return run(from_dict(raw), output, callbacks=callbacks, wandb_run=wandb_run)


def trial_config(sweep: SweepConfig, params: dict) -> RunConfig:
    """The run config of a trial: the base with each dotted key set (a named row sets all of its keys)."""
    raw = yaml.safe_load(yaml.safe_dump(sweep.base))
    for key, value in params.items():
        for k, v in sweep.rows[value].items() if key == "row" and sweep.rows else [(key, value)]:
            set_dotted(raw, k, decode(k, v))
    cfg = from_dict(raw)
    if any(k.endswith("rates") for k in params):
        from ablate.run.analysis import config_rate_message

        if message := config_rate_message(cfg):
            raise ConfigError(f"space: {message}")
    return cfg


def decode(key: str, value):
    """'6,12,18' -> [6, 12, 18] for a rates key; everything else as is."""
    if key.endswith("rates") and isinstance(value, str):
        try:
            return [int(r) for r in value.split(",")]
        except ValueError:
            raise ConfigError(f'{key}={value!r} is not a comma-separated list of integers like "6,12,18"') from None
    return value
