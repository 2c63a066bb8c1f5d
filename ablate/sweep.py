"""`python -m ablate.sweep [SWEEP.yaml] [key=value ...]`: an Optuna study over neck variants, several seeds each."""
from __future__ import annotations

import argparse
import dataclasses
import fcntl
import logging
import math
import os
import signal
import sys
import time
from pathlib import Path

import lightning as L
import optuna
import yaml
from optuna.trial import TrialState
from rich.console import Console

from ablate.config import ConfigError, to_dict
from ablate.render import effects_to_rich, render, settings, to_rich, varied_keys
from ablate.space import SweepConfig, grid_choices, load_sweep, suggest, to_plain, trial_config, variant_label
from ablate.table import add_deltas, main_effects, study_rows
from ablate.train import run

console = Console(stderr=True, highlight=False)
DEFAULT_STORAGE = "sqlite:///runs/ablate.db"


def make_storage(url: str) -> optuna.storages.RDBStorage:
    """An RDB storage; on SQLite, workers that start together create the schema one at a time."""
    if not url.startswith("sqlite:///"):
        return optuna.storages.RDBStorage(url)
    path = Path(url.removeprefix("sqlite:///"))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})


def open_study(sweep: SweepConfig, storage_url: str) -> optuna.Study:
    """Create the study or load it; a stored study with another space or direction is an error."""
    s = sweep.study
    samplers = {"tpe": lambda: optuna.samplers.TPESampler(seed=s.sampler_seed),
                "random": lambda: optuna.samplers.RandomSampler(seed=s.sampler_seed),
                "cmaes": lambda: optuna.samplers.CmaEsSampler(seed=s.sampler_seed),
                "grid": lambda: optuna.samplers.GridSampler(grid_choices(sweep.space), seed=s.sampler_seed)}
    pruners = {"median": lambda: optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
               "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=1),
               "none": optuna.pruners.NopPruner}
    study = optuna.create_study(study_name=s.name, storage=make_storage(storage_url), sampler=samplers[s.sampler](),
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
    """Trials that count towards n_trials: complete, pruned, or failed for a reason other than an interruption."""
    return [t for t in study.get_trials(deepcopy=False)
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
            or (t.state == TrialState.FAIL and not t.user_attrs.get("interrupted"))]


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
            requeue(trial)
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
                         "config": {"study": self.sweep.study.name, "trial": trial.number}}
            console.print(f"  trial {trial.number} seed {seed}: {variant}")
            Interrupt.check()
            summary = run(dataclasses.replace(cfg, seed=seed), self.root / f"t{trial.number}-s{seed}",
                          callbacks=[*prune, Interrupt()], wandb_run=wandb_run)
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


def requeue(trial: optuna.Trial) -> None:
    """Queue a WAITING copy of `trial` (same params, same grid point) and mark `trial` as interrupted."""
    (frozen,) = [t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number]
    optuna.storages.RetryHeartbeatStaleTrialCallback()(trial.study, frozen)
    trial.set_user_attr("interrupted", True)


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
            study.stop()


def sweep_main(sweep: SweepConfig, storage_url: str) -> int:
    """Run the study up to its n_trials total, then print the table; 0 when every counted trial is done."""
    study = open_study(sweep, storage_url)
    root = Path("runs") / sweep.study.name
    root.mkdir(parents=True, exist_ok=True)
    (root / "sweep.yaml").write_text(yaml.safe_dump(to_plain(sweep), sort_keys=False))
    remaining, stopper = sweep.n_trials - len(done_trials(study)), StopOnRepeatedFailure()
    if remaining > 0:
        console.print(f"study {sweep.study.name!r}: {remaining} of {sweep.n_trials} trials to run, "
                      f"{len(sweep.seeds)} seed(s) each")
        progress = _progress(sweep.n_trials, time.time())
        study.optimize(Objective(sweep, root), n_trials=remaining, catch=(Exception,),
                       callbacks=[stopper, progress, lambda *_: Interrupt.check()])
    report(study, root, storage_url, sweep.baseline)
    return 1 if stopper.stopped else 0


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
    console.print(f"table: {root / 'table.md'}\nlook further:\n"
                  f"  pip install optuna-dashboard && optuna-dashboard {redact(storage_url)}\n"
                  f"  python -m ablate.table --study {study.study_name} --format md|latex|csv|json|html\n"
                  f"  wandb sync runs/wandb/offline-run-*   # upload the offline W&B runs")


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
    p.add_argument("--dry-run", action="store_true", help="print the resolved space and a sample config; train nothing")
    args = p.parse_args(argv)
    if args.sweep and "=" in args.sweep:
        args.overrides, args.sweep = [args.sweep, *args.overrides], None
    storage_url = args.storage or os.environ.get("ABLATE_STORAGE") or DEFAULT_STORAGE
    Interrupt.install()  # Ctrl-C and SIGTERM fail the running trial (and queue it again), never orphan it
    quiet()
    try:
        sweep = _with_cli(load_sweep(args.sweep, args.overrides), args)
        if args.dry_run:
            return dry_run(sweep)
        return sweep_main(sweep, storage_url)
    except ConfigError as e:
        console.print(f"[red]error:[/] {e}")
        return 2
    except KeyboardInterrupt as e:
        console.print(f"[yellow]interrupted:[/] {e or 'by the user'}; the running trial is marked FAIL and "
                      "queued again: run the same command to finish the study")
        return 130


def quiet() -> None:
    """Our own progress line says it once: no Optuna per-trial logs, no Lightning banners per run."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
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
