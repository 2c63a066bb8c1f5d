"""A user's LightningCLI project as a study target: trial values are jsonargparse overrides of its own config,
validated by its own parser before anything trains, and each (trial, seed) is its CLI built in-process
(`run=False`) with ablate's callbacks and W&B run added to the project's own."""

from __future__ import annotations

import importlib
import json
import sys
import time
import warnings
from pathlib import Path

import lightning as L
import yaml
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.cli import LightningCLI

from ablate.callbacks import segmentation_callbacks
from ablate.callbacks import summary as callbacks_summary
from ablate.callbacks.efficiency import count_params
from ablate.cli import progress_bar_wanted
from ablate.config import flatten
from ablate.errors import ConfigError
from ablate.run.logged import LoggedMetrics
from ablate.run.loggers import finish_wandb, wandb_logger, wandb_mode
from ablate.study.cli_values import cli_arguments, coerce, override_pairs, trial_pairs
from ablate.study.space import SweepConfig, variant_label

PATH_ARGS = ("save_dir", "dirpath")  # logger / callback init_args that name a folder: relative ones go in the run
ARGS_WARNING = "LightningCLI's args parameter is intended"  # we give `args` while sys.argv holds ablate's own


class _ParserReady(Exception):
    """Stops a LightningCLI once its parser is built, before it parses anything: carries the parser."""


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


def cli_parser(cli_class: type):
    """The parser of the user's CLI (its own arguments, links and defaults), built as the CLI builds it; errors
    raise (ArgumentError), never exit."""

    class ParseOnly(cli_class):
        def init_parser(self, **kwargs):
            return super().init_parser(**{**kwargs, "exit_on_error": False})

        def parse_arguments(self, parser, args) -> None:
            raise _ParserReady(parser)

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=ARGS_WARNING)
            named_as(ParseOnly, cli_class)(args=[], run=False)
    except _ParserReady as ready:
        return ready.args[0]
    raise ConfigError(f"{cli_class.__name__} did not parse its arguments")


def named_as(subclass: type, cli_class: type) -> type:
    """`subclass` under the user's class's names, so that what LightningCLI says of `type(self)`
    ("`X.configure_optimizers` will be overridden by `MyCLI.configure_optimizers`") names the user's class."""
    for attr in ("__name__", "__qualname__", "__module__", "__doc__"):
        setattr(subclass, attr, getattr(cli_class, attr))
    return subclass


class LightningCLITarget:
    """Any LightningCLI project: `sweep.cli` names its CLI class, `sweep.base` its config, `sweep.metric` what
    a trial optimizes (best over validation epochs, in the study's direction)."""

    def __init__(self, sweep: SweepConfig):
        self.sweep, self.metric = sweep, sweep.metric
        self.cli_class = import_cli(sweep.cli, sweep.folders)
        self.parser, self._accepted = cli_parser(self.cli_class), {}
        self.overrides, self.base = self.parse_base()

    def parse_base(self) -> tuple[list[str], dict]:
        """(the overrides as arguments, the resolved config) of the base config with the sweep's overrides, parsed
        before any space value: a ConfigError names the base file, or the overrides, and the key the parser names."""
        base, name = self.sweep.base, self.cli_class.__name__
        pairs = override_pairs(self.sweep.overrides)
        try:
            alone = self.resolve([])
        except Exception as e:  # jsonargparse's ArgumentError, or an error raised by the user's CLI
            try:  # a base the overrides complete (a --config among them)
                args = cli_arguments(pairs, None)
                return args, self.resolve(args)
            except Exception:
                raise ConfigError(f"{base}: {name} refuses it:\n{e}") from None
        try:
            args = cli_arguments(coerce(pairs, lambda p: self.accepts(cli_arguments(p, alone)), alone), alone)
            return args, self.resolve(args)
        except ConfigError as e:
            raise ConfigError(f"overrides: {e}") from None
        except Exception as e:
            overrides = list(self.sweep.overrides)
            raise ConfigError(f"{base} with overrides {overrides}: {name} refuses them:\n{e}") from None

    def resolve(self, args: list[str]) -> dict:
        """The resolved config (plain data) of the base config with `args`."""
        namespace = self.parser.parse_args(["--config", str(self.sweep.base), *args])
        return yaml.safe_load(self.parser.dump(namespace, format="yaml", skip_unset=False))

    def accepts(self, args: list[str]) -> bool:
        """Whether the parser takes the base config with `args` (remembered)."""
        key = tuple(args)
        if key not in self._accepted:
            try:
                self.resolve(args)
                self._accepted[key] = True
            except Exception:
                self._accepted[key] = False
        return self._accepted[key]

    def arguments(self, params: dict) -> list[str]:
        """The sweep's overrides then the trial's values as arguments: sequences as the parser's types take them,
        list items (trainer.callbacks) by index or class name; a ConfigError names a key that reaches no item."""
        pairs = trial_pairs(params, self.sweep.rows)
        try:
            pairs = coerce(pairs, lambda p: self.accepts([*self.overrides, *cli_arguments(p, self.base)]), self.base)
            return [*self.overrides, *cli_arguments(pairs, self.base)]
        except ConfigError as e:
            raise ConfigError(f"space: {e}") from None

    def config(self, params: dict) -> dict:
        """The resolved config of a trial (plain data), parsed and validated by the user's own parser."""
        args = self.arguments(params)
        try:
            return self.resolve(args)
        except Exception as e:  # jsonargparse's ArgumentError, or an error raised by the user's CLI
            where = f"space: {variant_label(params)}" if params else f"base {self.sweep.base}"
            raise ConfigError(f"{where}: {self.cli_class.__name__} refuses it:\n{e}") from None

    def check(self) -> None:
        """The CLI imports and the base config with its overrides parses (make_target checked every value)."""
        self.config({})

    def fit(self, config: dict, seed: int, output: Path, *, callbacks: list, wandb_run: dict | None) -> dict:
        """One run of the user's CLI with `seed` in `output`; our callbacks and W&B run added to its own."""
        best = LoggedMetrics(self.metric, self.sweep.study.direction)
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
            quiet = quiet_trainer(self.config_init.get("trainer") or {}, self.trainer_defaults)
            trainer = super().instantiate_trainer(**{**quiet, **kwargs})
            listed = {type(c) for c in trainer.callbacks}
            trainer.callbacks[:0] = [c for c in callbacks if type(c) not in listed]  # a missing metric first
            trainer.loggers = [*trainer.loggers, *loggers]  # the user's first: trainer.log_dir stays theirs
            return trainer

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=ARGS_WARNING)
        return named_as(FitCLI, cli_class)(args=config, run=False)


def quiet_trainer(trainer, defaults: dict) -> dict:
    """Trainer arguments that keep a sweep's console to ablate's lines, for those the project leaves unset (null in
    its resolved config, Lightning's default): no model summary (the trial's line and params/total say it), and a
    progress bar only where `progress_bar_wanted` (a terminal). A value the project sets, in its config or its CLI's
    trainer_defaults, stays; so does a progress bar among its callbacks (Lightning refuses one with the bar off)."""
    quiet = {"enable_model_summary": False, "enable_progress_bar": progress_bar_wanted()}
    listed = [*as_list(trainer.get("callbacks")), *as_list(defaults.get("callbacks"))]
    if any(isinstance(c, ProgressBar) for c in listed):
        del quiet["enable_progress_bar"]
    return {k: v for k, v in quiet.items() if k in trainer and trainer[k] is None}  # a Trainer without k: none


def as_list(value) -> list:
    """`value` as a list: None -> [], a lone item -> [item]."""
    return [] if value is None else list(value) if isinstance(value, (list, tuple)) else [value]


def run_summary(trainer: L.Trainer, module, logged: LoggedMetrics, seed: int, config: dict) -> dict:
    """What a run leaves: every metric logged, last value under its own name and `at_best` (at the best epoch of
    the study's metric), `metric` (last) and `metric`_best, what ablate.callbacks measured (params, GFLOPs,
    latency, IoU at the best epoch, receptive fields, ERF), seed, config."""
    return {
        **logged.summary(trainer),
        "params/total": count_params(module),
        **callbacks_summary(trainer),
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
