"""A run's loggers: CSV in the run folder, and a W&B run (offline unless chosen) that records no argv, git or code."""

from __future__ import annotations

import os
from pathlib import Path

from ablate.config import RunConfig, flatten, to_dict
from ablate.errors import ConfigError


def scalar(value):
    """A config value W&B can put on an axis: lists and tuples become "6,12,18", everything else stays."""
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else value


def make_loggers(cfg: RunConfig, output: Path, wandb_run: dict | None) -> list:
    """CSV logger in `output`, plus a W&B run (offline unless chosen) that records no argv, git or code."""
    from lightning.pytorch.loggers import CSVLogger

    loggers = [CSVLogger(save_dir=output, name="", version="")]
    mode = wandb_mode(cfg)
    if mode == "disabled":
        return loggers
    run = {"name": output.name, "job_type": "train", **(wandb_run or {})}
    run["config"] = {**flatten(to_dict(cfg)), "neck": neck_columns(cfg.model.neck), **run.get("config", {})}
    loggers.append(
        wandb_logger(run, mode=mode, project=cfg.wandb.project, entity=cfg.wandb.entity, save_dir=cfg.wandb.dir)
    )
    return loggers


def wandb_logger(
    run: dict, *, mode: str, project: str | None = None, entity: str | None = None, save_dir: str = "runs"
):
    """A WandbLogger for one run (`run`: name, group, job_type, tags, config) that records no argv, git, code or
    system stats; project and entity default to $WANDB_PROJECT / $WANDB_ENTITY, else project `ablate`."""
    import wandb
    from lightning.pytorch.loggers import WandbLogger

    settings = wandb.Settings(
        x_disable_meta=True,
        x_disable_stats=True,
        disable_git=True,
        save_code=False,
        x_save_requirements=False,
        silent=True,
    )
    folder = Path(save_dir).resolve()  # absolute: W&B's service process keeps the cwd it started in
    folder.mkdir(parents=True, exist_ok=True)
    logger = WandbLogger(
        project=project or os.environ.get("WANDB_PROJECT") or "ablate",
        entity=entity or os.environ.get("WANDB_ENTITY"),
        mode=mode,
        save_dir=str(folder),
        settings=settings,
        **run,
    )
    if logger._wandb_init.get("anonymous") is None:  # Lightning passes anonymous=None, W&B warns it is deprecated
        logger._wandb_init.pop("anonymous", None)
    return logger


def wandb_mode(cfg: RunConfig | None) -> str:
    """`wandb.mode` from the config (None: no config, as a LightningCLI run), else $WANDB_MODE, else offline."""
    mode = (cfg.wandb.mode if cfg else None) or os.environ.get("WANDB_MODE") or "offline"
    if mode not in ("offline", "online", "disabled"):
        raise ConfigError(f"WANDB_MODE={mode!r} is not valid; use offline, online or disabled")
    return mode


def neck_columns(neck: dict) -> dict:
    """Every option of the neck, defaults filled in, as scalars: W&B's `neck.rates`, `neck.fusion`, ... columns."""
    from ablate.necks import neck_options

    name = neck["name"]
    options = {**neck_options(name), **{k: v for k, v in neck.items() if k != "name"}}
    return {"name": name, **{k: scalar(v) for k, v in options.items()}}


def finish_wandb(loggers: list, summary: dict, failed: bool) -> None:
    """Write the run summary to W&B and finish the run, marked failed (exit code 1) when training raised."""
    for logger in loggers:
        if type(logger).__name__ == "WandbLogger" and logger._experiment is not None:
            logger.experiment.summary.update(summary)
            logger.experiment.finish(exit_code=1 if failed else 0)
