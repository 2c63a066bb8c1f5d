"""A user's LightningCLI project as a study target: trial values are jsonargparse overrides of its own config,
validated by its own parser before anything trains, and each (trial, seed) is its CLI built in-process
(`run=False`) with ablate's callbacks and W&B run added to the project's own."""

from __future__ import annotations

import importlib
import json
import math
import sys
import time
import warnings
from pathlib import Path

import lightning as L
import yaml
from lightning.pytorch.cli import LightningCLI

from ablate.callbacks import segmentation_callbacks
from ablate.callbacks import summary as callbacks_summary
from ablate.callbacks.efficiency import count_params
from ablate.config import flatten
from ablate.errors import ConfigError
from ablate.run.loggers import finish_wandb, wandb_logger, wandb_mode
from ablate.study.space import SweepConfig

PATH_ARGS = ("save_dir", "dirpath")  # logger / callback init_args that name a folder: relative ones go in the run
ARGS_WARNING = "LightningCLI's args parameter is intended"  # we give `args` while sys.argv holds ablate's own


class _Parsed(Exception):
    """Stops a LightningCLI right after parsing: carries its parser and the parsed namespace."""


def import_cli(name: str, folders=()) -> type:
    """The LightningCLI (sub)class at import path `name`, with `folders` (the sweep file's) on sys.path."""
    for folder in reversed(folders):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    module, _, attr = name.rpartition(".")
    try:
        cli_class = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError) as e:
        raise ConfigError(
            f"cli: cannot import {name!r}: {type(e).__name__}: {e} (searched the sweep file's folder, "
            f"the working directory and the installed packages)"
        ) from None
    if not (isinstance(cli_class, type) and issubclass(cli_class, LightningCLI)):
        raise ConfigError(f"cli: {name!r} is not a subclass of lightning.pytorch.cli.LightningCLI")
    return cli_class


def parse_only(cli_class: type, args: list[str]):
    """(parser, namespace) of the user's CLI on `args`: parsed and validated, nothing instantiated or seeded."""

    class ParseOnly(cli_class):
        def init_parser(self, **kwargs):
            return super().init_parser(**{**kwargs, "exit_on_error": False})  # errors raise, never exit

        def parse_arguments(self, parser, args) -> None:
            super().parse_arguments(parser, args)
            raise _Parsed(parser, self.config)

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=ARGS_WARNING)
            ParseOnly(args=args, run=False)
    except _Parsed as parsed:
        return parsed.args
    raise ConfigError(f"{cli_class.__name__} did not parse its arguments")


def cli_value(key: str, value, space: dict) -> str:
    """A trial value as a command-line value: strings as they are ("6,12,18" of a {rates: K} key as a list)."""
    if "rates" in space.get(key, {}):
        return f"[{value}]"
    return value if isinstance(value, str) else json.dumps(value)


def arguments(sweep: SweepConfig, params: dict) -> list[str]:
    """`--config BASE --key=value ...`: the sweep's overrides, then the trial's values (an experiment's `row`: the
    keys its named row sets)."""
    overrides = [o if o.startswith("--") else f"--{o}" for o in sweep.overrides]
    values = [
        (k, v)
        for key, value in params.items()
        for k, v in (sweep.rows[value].items() if key == "row" and sweep.rows else [(key, value)])
    ]
    return ["--config", str(sweep.base), *overrides, *(f"--{k}={cli_value(k, v, sweep.space)}" for k, v in values)]


class LightningCLITarget:
    """Any LightningCLI project: `sweep.cli` names its CLI class, `sweep.base` its config, `sweep.metric` what
    a trial optimizes (best over validation epochs, in the study's direction)."""

    def __init__(self, sweep: SweepConfig):
        self.sweep, self.metric = sweep, sweep.metric
        self.cli_class = import_cli(sweep.cli, sweep.folders)
        self._parser = None

    def config(self, params: dict) -> dict:
        """The resolved config of a trial (plain data), parsed and validated by the user's own parser."""
        args = arguments(self.sweep, params)
        try:
            if self._parser is None:
                self._parser, namespace = parse_only(self.cli_class, args)
            else:
                namespace = self._parser.parse_args(args)
            return yaml.safe_load(self._parser.dump(namespace, format="yaml", skip_unset=False))
        except Exception as e:  # jsonargparse's ArgumentError, or an error raised by the user's CLI
            keys = " ".join(f"{k}={cli_value(k, v, self.sweep.space)}" for k, v in params.items())
            where = f"space: {keys}" if params else f"base {self.sweep.base}, overrides {list(self.sweep.overrides)}"
            raise ConfigError(f"{where}: {self.cli_class.__name__} refuses it:\n{e}") from None

    def check(self) -> None:
        """The CLI imports and the base config with its overrides parses (make_target checked every value)."""
        self.config({})

    def fit(self, config: dict, seed: int, output: Path, *, callbacks: list, wandb_run: dict | None) -> dict:
        """One run of the user's CLI with `seed` in `output`; our callbacks and W&B run added to its own."""
        best = BestMetric(self.metric, self.sweep.study.direction)
        shown = segmentation_callbacks(strict=False) if self.sweep.callbacks else []  # a misfit: one line each
        loggers = wandb_loggers(wandb_run, config, seed)
        started = time.perf_counter()
        try:
            cli = fit_cli(self.cli_class, run_config(config, seed, output), [*shown, best, *callbacks], loggers)
            cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        except BaseException as e:
            finish_wandb(loggers, {"state": type(e).__name__}, failed=type(e).__name__ != "TrialPruned")
            raise
        summary = run_summary(cli.trainer, cli.model, best, seed, config)
        summary["time/fit_s"] = time.perf_counter() - started
        if cli.trainer.is_global_zero:  # under DDP only rank 0 writes the result
            output.mkdir(parents=True, exist_ok=True)
            (output / "summary.json").write_text(json.dumps(summary, indent=2))
        finish_wandb(loggers, {k: v for k, v in summary.items() if k != "config"}, failed=False)
        return summary


def run_config(config: dict, seed: int, output: Path) -> dict:
    """`config` for one run: `seed_everything=seed`, `trainer.default_root_dir=output`, and relative folders of
    its loggers and callbacks (save_dir, dirpath) inside `output`, so that runs never share a folder."""
    config = json.loads(json.dumps(config))
    trainer = config.setdefault("trainer", {})
    trainer["default_root_dir"] = str(output)
    for key in ("logger", "callbacks"):
        items = trainer.get(key)
        for item in items if isinstance(items, list) else [items]:
            init_args = (item.get("init_args") or {}) if isinstance(item, dict) else {}
            for arg in PATH_ARGS:
                if isinstance(init_args.get(arg), str) and not Path(init_args[arg]).is_absolute():
                    init_args[arg] = str(output / init_args[arg])
    return {**config, "seed_everything": seed}


def fit_cli(cli_class: type, config: dict, callbacks: list, loggers: list):
    """The user's CLI on `config` (a dict, as `args`), classes instantiated, not run; `callbacks` and `loggers`
    added to the trainer's own (a callback of a class the project already lists is not added again), the saved
    config.yaml overwritten on a rerun."""

    class FitCLI(cli_class):
        def instantiate_trainer(self, **kwargs):
            self.save_config_kwargs = {**self.save_config_kwargs, "overwrite": True}
            trainer = super().instantiate_trainer(**kwargs)
            listed = {type(c) for c in trainer.callbacks}
            trainer.callbacks[:0] = [c for c in callbacks if type(c) not in listed]  # a missing metric first
            trainer.loggers = [*trainer.loggers, *loggers]  # the user's first: trainer.log_dir stays theirs
            return trainer

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=ARGS_WARNING)
        return FitCLI(args=config, run=False)


class BestMetric(L.Callback):
    """Best `metric` over validation epochs (max or min by `direction`); a metric the module never logs, a
    non-finite one or a non-finite logged loss stops the run at the first validation that shows it."""

    def __init__(self, metric: str, direction: str = "maximize"):
        self.metric, self.sign, self.best, self.last = metric, 1 if direction == "maximize" else -1, None, None

    def on_sanity_check_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.callback_metrics:  # the sanity check logged something: the metric must be among it
            self._read(trainer)

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = self._read(trainer)
        self.last = value
        if self.best is None or self.sign * (value - self.best) > 0:
            self.best = value

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


def run_summary(trainer: L.Trainer, module, best: BestMetric, seed: int, config: dict) -> dict:
    """What a run leaves: the last epoch's val/ metrics, what ablate.callbacks measured (params, GFLOPs, latency,
    IoU at the best epoch, receptive fields, ERF), `metric` (last) and `metric`_best, seed, config."""
    last = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/") or k == best.metric}
    return {
        **last,
        "params/total": count_params(module),
        **callbacks_summary(trainer),
        best.metric: best.last,
        f"{best.metric}_best": best.best,
        "epochs": trainer.current_epoch,
        "seed": seed,
        "config": config,
    }


def wandb_loggers(wandb_run: dict | None, config: dict, seed: int) -> list:
    """One W&B run (WandbLogger) per (trial, seed) named by the engine, none on DDP ranks > 0 or when disabled;
    project and entity from $WANDB_PROJECT / $WANDB_ENTITY (default project: ablate)."""
    mode = wandb_mode(None)
    if wandb_run is None or mode == "disabled":
        return []
    seeds = {"seed_everything": seed, "seed": seed}  # the run's seed, not the base config's
    run = {**wandb_run, "config": {**flatten(config), **seeds, **wandb_run.get("config", {})}}
    return [wandb_logger(run, mode=mode)]
