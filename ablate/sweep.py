"""`python -m ablate.sweep [SWEEP.yaml] [key=value ...]`: an Optuna study over neck variants, several seeds each."""
from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import signal
import sys
import time
import warnings
from pathlib import Path

import lightning as L
import optuna
import yaml
from optuna.trial import TrialState
from rich.console import Console

from ablate.config import ConfigError, flatten, from_dict, to_dict
from ablate.data import create_datamodule
from ablate.render import effects_to_rich, render, settings, to_rich, varied_keys
from ablate.space import (
    StudyConfig,
    SweepConfig,
    grid_choices,
    load_sweep,
    suggest,
    to_plain,
    trial_config,
    variant_label,
)
from ablate.table import add_deltas, main_effects, study_rows
from ablate.train import run
from ablate.visuals import swept_columns, swept_keys
from ablate.workers import (
    WORKER_ENV,
    Heartbeat,
    Slots,
    config_digest,
    counted,
    ddp_rank,
    follow,
    share,
    sqlite_lock,
    start_workers,
)

console = Console(stderr=True, highlight=False)
DEFAULT_STORAGE = "sqlite:///runs/ablate.db"


def make_storage(url: str, heartbeat: tuple[int, int] | None = None) -> optuna.storages.RDBStorage:
    """An RDB storage: SQLite (one machine) or PostgreSQL (many).

    `heartbeat` = (interval, grace period) in seconds: running trials record heartbeats, and a trial whose
    worker died is failed and queued again with the same parameters.
    """
    beat = {}
    if heartbeat:
        beat = {"heartbeat_interval": heartbeat[0], "grace_period": heartbeat[1],
                "heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback()}
    if not url.startswith("sqlite:///"):
        if not url.startswith("postgresql"):
            raise ConfigError(f"storage {redact(url)!r}: use sqlite:///PATH (one machine) or "
                              "postgresql+psycopg2://USER:PASSWORD@HOST/DB (many machines)")
        return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True}, **beat)
    with sqlite_lock(url):  # workers that start together create the schema one at a time
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}}, **beat)


class GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler without its own stop: the worker loop stops at exactly n_trials."""

    def after_trial(self, *args) -> None:
        pass


def open_study(sweep: SweepConfig, storage_url: str) -> optuna.Study:
    """Create the study or load it; a stored study with another space or direction is an error."""
    s = sweep.study
    samplers = {"tpe": lambda: optuna.samplers.TPESampler(seed=s.sampler_seed),
                "random": lambda: optuna.samplers.RandomSampler(seed=s.sampler_seed),
                "cmaes": lambda: optuna.samplers.CmaEsSampler(seed=s.sampler_seed),
                "grid": lambda: GridSampler(grid_choices(sweep.space), seed=s.sampler_seed)}
    pruners = {"median": lambda: optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
               "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=1),
               "none": optuna.pruners.NopPruner}
    storage = make_storage(storage_url, (s.heartbeat_interval, s.grace_period))
    study = optuna.create_study(study_name=s.name, storage=storage, sampler=samplers[s.sampler](),
                                pruner=pruners[s.pruner](), direction=s.direction, load_if_exists=True)
    stored = study.user_attrs.get("space")
    if stored is None:
        study.set_user_attr("space", sweep.space_json())
        study.set_user_attr("sweep", to_plain(sweep))
    elif stored != sweep.space_json():
        raise ConfigError(f"study {s.name!r} already exists in this storage with another search space or direction.\n"
                          f"stored: {stored}\nnew:    {sweep.space_json()}\n"
                          "Use --study NEW_NAME for the new space, or the stored sweep file to resume.")
    return study


def done_trials(study: optuna.Study) -> list:
    """Finished trials that count towards n_trials: all but failed trials that were run again."""
    return [t for t in counted(study.get_trials(deepcopy=False)) if t.state.is_finished()]


class Objective:
    """One trial: every seed in turn through `ablate.train.run`; the value is the mean of the seeds' best mIoU."""

    def __init__(self, sweep: SweepConfig, root: Path):
        self.sweep, self.root = sweep, root

    def __call__(self, trial: optuna.Trial) -> float:
        params = suggest(trial, self.sweep.space)
        variant = variant_label(params)
        cfg = trial_config(self.sweep, params)
        trial.set_user_attr("variant", variant)
        trial.set_user_attr("config", to_dict(cfg))
        try:
            return self._seeds(trial, cfg, variant)
        except (KeyboardInterrupt, SystemExit) as e:  # Lightning turns Ctrl-C / SIGTERM into SystemExit
            trial.set_user_attr("interrupted", True)
            raise KeyboardInterrupt(f"trial {trial.number} interrupted") from e
        except optuna.TrialPruned:
            raise
        except Exception as e:
            trial.set_user_attr("fail_reason", f"{type(e).__name__}: {e}")
            raise

    def _seeds(self, trial: optuna.Trial, cfg, variant: str) -> float:
        from optuna_integration import PyTorchLightningPruningCallback

        values, metrics = [], []
        for i, seed in enumerate(self.sweep.seeds):
            prune = [PyTorchLightningPruningCallback(trial, monitor="val/mIoU")] if i == 0 else []
            wandb_run = {"name": f"t{trial.number}-s{seed}", "group": variant, "job_type": "trial",
                         "tags": [self.sweep.study.name],
                         "config": {"study": self.sweep.study.name, "trial": trial.number,
                                    "swept": swept_columns(flatten(to_dict(cfg)), swept_keys(self.sweep.space, self.sweep.rows))}}
            run_cfg, output = dataclasses.replace(cfg, seed=seed), self.root / f"t{trial.number}-s{seed}"
            config = to_dict(run_cfg)
            console.print(f"  trial {trial.number} seed {seed}: {variant} (config {config_digest(config)})")
            Interrupt.check()
            share({"config": config, "output": str(output), "trial_id": trial._trial_id, "number": trial.number,
                   "variant": variant, "prune": bool(prune)})  # the other ranks of a DDP job train the same
            summary = run(run_cfg, output, callbacks=[*prune, Interrupt()], wandb_run=wandb_run)
            for callback in prune:
                callback.check_pruned()  # under DDP the prune decision comes back through the storage
            best = summary["val/mIoU_best"]
            if summary["val/mIoU"] is None or not math.isfinite(summary["val/mIoU"]):
                raise FloatingPointError(f"seed {seed}: val/mIoU is {summary['val/mIoU']}")
            values.append(best)
            metrics.append({k: v for k, v in summary.items() if k.startswith("val/") and v is not None})
            trial.set_user_attr("seeds", list(self.sweep.seeds[:i + 1]))
            trial.set_user_attr("values", values)
            trial.set_user_attr("seed_metrics", metrics)  # every val/ metric of each seed's last epoch
            for key in ("params/neck", "params/total", "gflops", "classes"):
                trial.set_user_attr(key, summary[key])
        return sum(values) / len(values)


class Interrupt(L.Callback):
    """SIGINT/SIGTERM become a KeyboardInterrupt at the next batch boundary (a second signal: at once).

    Raising straight from the signal handler can land inside a finalizer, where Python swallows it.
    """

    signum: int | None = None

    @classmethod
    def install(cls) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, cls._handle)

    @classmethod
    def _handle(cls, signum, frame) -> None:
        first, cls.signum = cls.signum is None, signum
        if not first:
            cls.check()
        console.print(f"\n{signal.Signals(signum).name}: stopping at the next step (again to stop at once)")

    @classmethod
    def check(cls) -> None:
        if cls.signum is not None:
            raise KeyboardInterrupt(f"signal {signal.Signals(cls.signum).name}")

    def on_train_batch_end(self, *args) -> None:
        self.check()

    def on_validation_batch_end(self, *args) -> None:
        self.check()


def requeue(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Queue a WAITING copy of a failed `trial` (same params, same grid point): it runs again, and `trial`
    stops counting towards n_trials (the same as a dead worker's trial, see `ablate.workers`)."""
    optuna.storages.RetryHeartbeatStaleTrialCallback()(study, trial)


class StopOnRepeatedFailure:
    """Stop the study when the first trials of this session all fail with the same error."""

    def __init__(self, repeats: int = 2):
        self.repeats, self.reasons, self.completed, self.stopped = repeats, [], False, False

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.state == TrialState.COMPLETE:
            self.completed = True
        if self.completed or trial.state != TrialState.FAIL:
            return
        self.reasons.append(trial.user_attrs.get("fail_reason", "unknown error"))
        kinds = {reason.partition(":")[0] for reason in self.reasons}  # the exception type
        if len(self.reasons) >= self.repeats and len(kinds) == 1:
            console.print(f"[red]error:[/] the first {self.repeats} trials all failed with:\n  {self.reasons[0]}\n"
                          "stopping the study; fix the cause and run the same command again")
            self.stopped = True


def sweep_main(sweep: SweepConfig, storage_url: str, workers: int = 1, argv: list[str] = ()) -> int:
    """Run the study up to its n_trials total, then print the table; 0 when every counted trial is done.

    With `workers` > 1, that many processes of the same command (`argv`) share the study."""
    if ddp_rank() != 0:  # a rank Lightning started for a DDP trial: it trains what rank 0 hands over
        s = sweep.study
        return follow(optuna.load_study(study_name=s.name, sampler=optuna.samplers.RandomSampler(),
                                        storage=make_storage(storage_url, (s.heartbeat_interval, s.grace_period))))
    study = open_study(sweep, storage_url)
    root = Path("runs") / sweep.study.name
    root.mkdir(parents=True, exist_ok=True)
    (root / "sweep.yaml").write_text(yaml.safe_dump(to_plain(sweep), sort_keys=False))
    remaining, stopper = sweep.n_trials - len(done_trials(study)), StopOnRepeatedFailure()
    if remaining > 0:
        console.print(f"study {sweep.study.name!r}: {remaining} of {sweep.n_trials} trials to run, "
                      f"{len(sweep.seeds)} seed(s) each")
        create_datamodule(from_dict(sweep.base))  # files on disk are read and checked before any trial starts
        if workers > 1:
            code = start_workers(workers, argv)
            report(study, root, storage_url, sweep.baseline)
            return code
        try:
            run_trials(study, Objective(sweep, root), Slots(storage_url, sweep.study.name, sweep.n_trials),
                       [stopper, _progress(sweep.n_trials, time.time())], stopper, sweep.study)
        finally:
            share(None)  # the other ranks of a DDP job, if any, stop
    if WORKER_ENV not in os.environ:  # one of `--workers N`: the command that started it prints the table
        report(study, root, storage_url, sweep.baseline)
    return 1 if stopper.stopped else 0


def run_trials(study: optuna.Study, objective: Objective, slots: Slots, callbacks: list, stopper,
               settings: StudyConfig) -> None:
    """Take trial slots and run them until all `slots.total` are taken and none runs anywhere.

    When every slot is taken but trials still run in other workers, wait: if one of those workers dies,
    its trial is queued again after the grace period, and this worker runs it.
    """
    announced = False
    while not stopper.stopped:
        trial = slots.claim(study)
        if trial is None:
            running = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
            if not running:
                return
            if not announced:
                console.print(f"every trial slot is taken; waiting for trial(s) {running} in other workers "
                              f"(a dead worker's trial is queued again after {settings.grace_period} s)")
            announced = True
            time.sleep(min(2, settings.heartbeat_interval))  # most often the others just finish
            continue
        announced = False
        frozen = run_one(study, trial, objective, settings.heartbeat_interval)
        for callback in callbacks:
            callback(study, frozen)
        Interrupt.check()


def run_one(study: optuna.Study, trial: optuna.Trial, objective: Objective, heartbeat_interval: int):
    """One trial with heartbeats: COMPLETE, PRUNED or FAIL (any error is caught, kept and printed);
    on Ctrl-C / SIGTERM it is failed, queued again, and the interrupt goes on up."""
    with Heartbeat(study._storage, trial._trial_id, heartbeat_interval):
        try:
            frozen = study.tell(trial, objective(trial))
        except optuna.TrialPruned:
            frozen = study.tell(trial, state=TrialState.PRUNED)
        except KeyboardInterrupt:
            requeue(study, study.tell(trial, state=TrialState.FAIL))
            raise
        except Exception:
            frozen = study.tell(trial, state=TrialState.FAIL)
    return frozen


def _progress(total: int, started: float):
    def show(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        n = len(done_trials(study))
        value = "" if trial.value is None else f" = {trial.value:.4f}"
        reason = f" ({trial.user_attrs['fail_reason']})" if "fail_reason" in trial.user_attrs else ""
        elapsed = time.time() - started
        console.print(f"[bold][{n}/{total}][/] trial {trial.number} {trial.state.name.lower()}{value}{reason}  "
                      f"{trial.user_attrs.get('variant', '')}  ({elapsed / 60:.1f} min)")
    return show


def report(study: optuna.Study, root: Path, storage_url: str, baseline: dict | None = None) -> None:
    """Print the comparison table, write it to runs/<study>/table.md, and say where to look further."""
    rows = study_rows(study.get_trials(deepcopy=False))
    if any(r["mean"] is not None for r in rows):  # Δ against the named baseline once it has a result
        named = baseline and any(r["mean"] is not None and baseline.items() <= settings(r["variant"]).items()
                                 for r in rows)
        add_deltas(rows, baseline if named else None)
    (root / "table.md").write_text(render(rows, "md"))
    out = Console(highlight=False)
    out.print(to_rich(rows, f"study {study.study_name}: mean ± std over seeds, best first"))
    if len(rows) > 2 and len(varied_keys(rows)) > 1:  # one swept key: the table already is its effect
        out.print(effects_to_rich(main_effects(rows)))
    where = f"--study {study.study_name}" + (f" --storage {redact(storage_url)}" if storage_url != DEFAULT_STORAGE else "")
    console.print(f"table: {root / 'table.md'}\nlook further:\n"
                  f"  pip install optuna-dashboard && optuna-dashboard {redact(storage_url)}\n"
                  f"  python -m ablate.table {where} --format md|latex|csv|json|html\n"
                  f"  python -m ablate.report {where}   # one HTML file with the plots\n"
                  f"  wandb sync runs/wandb/offline-run-*   # upload the offline W&B runs\n"
                  f"  python -m ablate.dashboard {where} --entity E --project P   # W&B workspace",
                  soft_wrap=True)  # commands stay on one line, to copy


def redact(url: str) -> str:
    """The storage URL with its password replaced by ***."""
    from sqlalchemy.engine import make_url

    return url if url.startswith("sqlite") else make_url(url).render_as_string(hide_password=True)


def main(argv: list[str] | None = None) -> int:
    """Command line."""
    p = argparse.ArgumentParser(prog="python -m ablate.sweep", description=__doc__)
    p.add_argument("sweep", nargs="?", help="sweep file (default: sweeps/default.yaml)")
    p.add_argument("overrides", nargs="*", help="dotted overrides of the base run config, e.g. trainer.max_epochs=2")
    p.add_argument("--study", help="study name (default: the sweep file's study.name)")
    p.add_argument("--storage", help=f"Optuna RDB URL (default: $ABLATE_STORAGE, else {DEFAULT_STORAGE})")
    p.add_argument("--n-trials", type=int, help="study-wide total of trials")
    p.add_argument("--seeds", help="comma-separated seeds every trial trains, e.g. 0,1,2")
    p.add_argument("--workers", type=int, default=1,
                   help="worker processes on this machine, each training one trial at a time (default 1); "
                        "the same command on other machines joins the same study")
    p.add_argument("--dry-run", action="store_true", help="print the resolved space and a sample config; train nothing")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = p.parse_args(argv)
    if args.workers < 1:
        p.error(f"--workers {args.workers}: give 1 or more worker processes")
    if args.sweep and "=" in args.sweep:
        args.overrides, args.sweep = [args.sweep, *args.overrides], None
    storage_url = args.storage or os.environ.get("ABLATE_STORAGE") or DEFAULT_STORAGE
    Interrupt.install()  # Ctrl-C and SIGTERM fail the running trial (and queue it again), never orphan it
    quiet()
    try:
        sweep = _with_cli(load_sweep(args.sweep, args.overrides), args)
        if args.dry_run:
            return dry_run(sweep)
        return sweep_main(sweep, storage_url, args.workers, _without_workers(argv))
    except ConfigError as e:
        console.print(f"[red]error:[/] {e}")
        return 2
    except KeyboardInterrupt as e:
        console.print(f"[yellow]interrupted:[/] {e or 'by the user'}; the running trial is marked FAIL and "
                      "queued again: run the same command to finish the study")
        return 130


def _without_workers(argv: list[str]) -> list[str]:
    """`argv` minus `--workers N` / `--workers=N`: the command each worker process runs."""
    out, skip = [], False
    for arg in argv:
        if skip or arg.startswith("--workers="):
            skip = False
            continue
        skip = arg == "--workers"
        if not skip:
            out.append(arg)
    return out


def quiet() -> None:
    """Our own progress line says it once: no Optuna per-trial logs, no Lightning banners per run."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats, stale trials
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)


def _with_cli(sweep: SweepConfig, args) -> SweepConfig:
    changes = {}
    if args.study:
        changes["study"] = dataclasses.replace(sweep.study, name=args.study)
    if args.n_trials is not None:
        changes["n_trials"] = args.n_trials
    if args.seeds:
        try:
            changes["seeds"] = tuple(int(s) for s in args.seeds.split(","))
        except ValueError:
            raise ConfigError(f"--seeds {args.seeds!r} must be comma-separated integers, e.g. 0,1,2") from None
    sweep = dataclasses.replace(sweep, **changes)
    from ablate.space import validate_sweep

    validate_sweep(sweep)
    return sweep


def dry_run(sweep: SweepConfig) -> int:
    """Print the space, the study settings and one sampled trial's run config (plain YAML, never wrapped)."""
    print(yaml.safe_dump({"study": dataclasses.asdict(sweep.study), "n_trials": sweep.n_trials,
                          "seeds": list(sweep.seeds), "space": sweep.space}, sort_keys=False))
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=sweep.study.sampler_seed)).ask()
    params = suggest(trial, sweep.space)
    print(f"# sample trial: {variant_label(params)}")
    print(yaml.safe_dump(to_dict(trial_config(sweep, params)), sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
