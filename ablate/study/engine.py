"""The study loop, the same for every target: trial slots, seeds, heartbeats, signals, failures, W&B naming."""

from __future__ import annotations

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

from ablate.cli import console, error, quiet_dependencies, run_log
from ablate.config import flatten
from ablate.study.columns import swept_columns, swept_keys
from ablate.study.decide import ROUND, Rounds, check_max_seeds, seeds_for, verdict_attrs
from ablate.study.faults import fail_reason, naming, release_memory, tell
from ablate.study.folders import claim, refuse_another
from ablate.study.outage import EXIT_CODE as OUTAGE_EXIT
from ablate.study.outage import StorageUnavailable
from ablate.study.pool import start_workers
from ablate.study.progress import Waiting, record_plan, record_where, running
from ablate.study.race import Race, check_in_race
from ablate.study.space import SweepConfig, suggest, to_plain, variant_label
from ablate.study.storage import close_connections, load_study, make_storage, open_study
from ablate.study.workers import (
    WORKER_ENV,
    Heartbeat,
    Slots,
    config_digest,
    counted,
    ddp_rank,
    follow,
    share,
)


def done_trials(study: optuna.Study) -> list:
    """Finished trials that count towards n_trials: all but failed trials that were run again."""
    return [t for t in counted(study.get_trials(deepcopy=False)) if t.state.is_finished()]


class Objective:
    """One trial: every seed in turn through the target; the value is the mean of the seeds' best `metric`."""

    def __init__(self, sweep: SweepConfig, target, root: Path, locked):
        self.sweep, self.target, self.root, self.locked = sweep, target, root, locked  # Slots.locked

    def __call__(self, trial: optuna.Trial) -> float:
        params = suggest(trial, self.sweep.space)
        variant, config = variant_label(params), self.target.config(params)
        trial.set_user_attr("variant", variant)
        trial.set_user_attr("config", config)
        check_in_race(trial, variant)  # a variant out of the race (--race) trains no seed again
        record_where(trial)  # host, pid, worker, GPUs: for ablate.status
        try:
            return self._seeds(trial, config, variant, seeds_for(trial, variant, self.sweep.seeds, self.locked))
        except (KeyboardInterrupt, SystemExit) as e:  # Lightning turns Ctrl-C / SIGTERM into SystemExit
            trial.set_user_attr("interrupted", True)
            raise KeyboardInterrupt(f"trial {trial.number} interrupted") from e
        except (optuna.TrialPruned, StorageUnavailable, optuna.exceptions.UpdateFinishedTrialError):
            raise  # pruned; the storage is gone; the trial was finished elsewhere (see run_one)
        except Exception as e:
            trial.set_user_attr("fail_reason", fail_reason(e, config))
            raise

    def wandb_run(self, trial: optuna.Trial, seed: int, variant: str, config: dict) -> dict:
        """One W&B run per (trial, seed): named t{trial}-s{seed}, grouped by the variant, tagged with the study."""
        swept = swept_columns(flatten(config), swept_keys(self.sweep.space, self.sweep.rows))
        return {
            "name": f"t{trial.number}-s{seed}",
            "group": variant,
            "job_type": "trial",
            "tags": [self.sweep.study.name],
            "config": {"study": self.sweep.study.name, "trial": trial.number, "swept": swept},
        }

    def _seeds(self, trial: optuna.Trial, config: dict, variant: str, seeds: list[int]) -> float:
        from optuna_integration import PyTorchLightningPruningCallback

        metric, values, metrics = self.target.metric, [], []
        added = ROUND in trial.user_attrs  # an added seed is never pruned: that would bias its comparison
        for i, seed in enumerate(seeds):
            prune = [PyTorchLightningPruningCallback(trial, monitor=metric)] if i == 0 and not added else []
            output = self.root / f"t{trial.number}-s{seed}"
            console.print(f"  trial {trial.number} seed {seed}: {variant} (config {config_digest(config)})")
            Interrupt.check()
            share(
                {
                    "config": config,
                    "seed": seed,
                    "output": str(output),
                    "trial_id": trial._trial_id,
                    "number": trial.number,
                    "variant": variant,
                    "prune": bool(prune),
                }
            )  # DDP ranks train the same
            with naming(output), run_log(output), running(trial, seed) as epochs:  # naming: a full disk names output
                summary = self.target.fit(
                    config,
                    seed,
                    output,
                    callbacks=[*prune, Interrupt(), epochs],
                    wandb_run=self.wandb_run(trial, seed, variant, config),
                )
            for callback in prune:
                callback.check_pruned()  # under DDP the prune decision comes back through the storage
            if summary.get(metric) is None or not math.isfinite(summary[metric]):
                raise FloatingPointError(f"seed {seed}: {metric} is {summary.get(metric)}")
            values.append(summary[f"{metric}_best"])
            metrics.append(recorded(summary))
            record(trial, seeds[: i + 1], values, metrics, summary)
        return sum(values) / len(values)


def recorded(summary: dict) -> tuple[dict, dict]:
    """(last, at_best) of one seed's run: every number its summary holds under its own name (each metric logged,
    params, GFLOPs, latency, receptive fields, ...), and every metric logged at the epoch of the best objective."""
    number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
    last = {k: v for k, v in summary.items() if number(v) and k != "seed"}
    return last, {k: v for k, v in (summary.get("at_best") or {}).items() if number(v)}


def record(trial: optuna.Trial, seeds, values: list, metrics: list, summary: dict) -> None:
    """What tables need, on the trial: seeds, each seed's best metric, and each seed's numbers (`recorded`): the
    last epoch's (seed_metrics) and those at its best epoch (seed_metrics_best)."""
    trial.set_user_attr("seeds", list(seeds))
    trial.set_user_attr("values", values)
    trial.set_user_attr("seed_metrics", [last for last, _ in metrics])
    trial.set_user_attr("seed_metrics_best", [best for _, best in metrics])
    for key in ("params/neck", "params/total", "gflops", "classes"):
        if key in summary:
            trial.set_user_attr(key, summary[key])


class Interrupt(L.Callback):
    """SIGINT/SIGTERM become a KeyboardInterrupt: at once outside a fit (data generation, study creation, between
    trials), at the next batch boundary inside one (a second signal: at once).

    Raising straight from the signal handler inside a fit can land inside a finalizer, where Python swallows it.
    """

    signum: int | None = None
    fitting = False  # between on_fit_start and the fit's end

    @classmethod
    def install(cls) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, cls._handle)

    @classmethod
    def _handle(cls, signum, frame) -> None:
        first, cls.signum = cls.signum is None, signum
        if not first or not cls.fitting:
            cls.check()
        if sys.stderr.isatty():  # a log gets the one line the command ends with
            console.print(f"\n{signal.Signals(signum).name}: stopping at the next step (again to stop at once)")

    @classmethod
    def check(cls) -> None:
        if cls.signum is not None:
            raise KeyboardInterrupt(signal.Signals(cls.signum).name)

    def on_fit_start(self, *args) -> None:
        Interrupt.fitting = True

    def on_fit_end(self, *args) -> None:
        Interrupt.fitting = False

    def on_exception(self, *args) -> None:
        Interrupt.fitting = False

    def on_train_batch_end(self, *args) -> None:
        self.check()

    def on_validation_batch_end(self, *args) -> None:
        self.check()


def requeue(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Queue a WAITING copy of a failed `trial` (same params, same grid point): it runs again, and `trial`
    stops counting towards n_trials (the same as a dead worker's trial, see `ablate.study.workers`)."""
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
            error(
                f"the first {self.repeats} trials all failed with:\n  {self.reasons[0]}\n"
                "stopping the study; fix the cause and run the same command again"
            )
            self.stopped = True


def run_study(
    sweep: SweepConfig, target, storage_url: str, workers: int = 1, argv: list[str] = (), gpus: list[str] | None = None
) -> int:
    """Run the study up to its n_trials total; 0 when every counted trial is done, 1 when it stopped on failures.

    With `workers` > 1, or `gpus` (each worker's CUDA_VISIBLE_DEVICES), that many workers forked from this
    process share the study, each as if started by the same command minus those flags (`argv`)."""
    s = sweep.study
    if ddp_rank() != 0:  # a rank Lightning started for a DDP trial: it trains what rank 0 hands over
        storage = make_storage(storage_url, (s.heartbeat_interval, s.grace_period), s.storage_timeout)
        return follow(load_study(s.name, storage, sampler=optuna.samplers.RandomSampler()), target)
    root = Path("runs") / s.name
    refuse_another(root, storage_url, s.name)  # another study's runs there: stop before this one is created
    study = open_study(sweep, storage_url)
    rounds = until_decided(sweep, study)
    record_plan(study, sweep, rounds)  # for ablate.status
    claim(root, study, storage_url)  # runs/<study>/study.json: the folder is this study's
    (root / "sweep.yaml").write_text(yaml.safe_dump(to_plain(sweep), sort_keys=False))
    remaining, stopper = sweep.n_trials - len(done_trials(study)), StopOnRepeatedFailure()
    if remaining <= 0 and not (rounds and rounds.pending(study)):
        return 0
    then = f"; then {rounds.name} ({rounds})" if rounds else ""
    todo = f"{max(remaining, 0)} of {sweep.n_trials} trials to run, {len(sweep.seeds)} seed(s) each"
    if not is_worker():  # the command said it once
        console.print(f"study {s.name!r}: {todo}{then}")
    target.check()
    if workers > 1 or gpus:
        close_connections(study)  # each worker opens its own
        return start_workers(workers, lambda: run_study(sweep, target, storage_url), argv, gpus)
    try:
        slots = Slots(storage_url, s.name, sweep.n_trials, extend=rounds)
        run_trials(
            study,
            Objective(sweep, target, root, slots.locked),
            slots,
            [stopper, progress(sweep.n_trials, time.time())],
            stopper,
            s,
        )
    finally:
        share(None)  # the other ranks of a DDP job, if any, stop
    return 1 if stopper.stopped else 0


def until_decided(sweep: SweepConfig, study: optuna.Study) -> Rounds | None:
    """Record what the study's tables decide with; with --until-decided or --race, check --max-seeds against the
    seeds already run (a ConfigError before anything trains) and return the planner of its rounds."""
    s, trials = sweep.study, study.get_trials(deepcopy=False)
    if s.until_decided or s.race:
        check_max_seeds(trials, s.max_seeds, len(sweep.seeds))
    study.set_user_attr("verdicts", verdict_attrs(sweep, study.user_attrs.get("verdicts")))
    return Race(sweep) if s.race else Rounds(sweep) if s.until_decided else None


def is_worker() -> bool:
    """True in a process that `--workers N` started (the command that started it prints the table)."""
    return WORKER_ENV in os.environ


def prints_the_end(code: int) -> bool:
    """Whether this process, its study run ending with `code`, prints the study's table: the command that was
    started (not a worker it forked, not a DDP rank other than 0), unless the storage went away."""
    return not is_worker() and ddp_rank() == 0 and code != OUTAGE_EXIT


def run_trials(study: optuna.Study, objective: Objective, slots: Slots, callbacks: list, stopper, settings) -> None:
    """Take trial slots and run them until all `slots.total` are taken and none runs anywhere.

    When every slot is taken but the last trials still run in other workers, wait for them (`Waiting` says so): if
    one of those workers died, its trial is queued again after the grace period, and this worker runs it.
    """
    waiting = Waiting(settings.heartbeat_interval, settings.grace_period)
    while not stopper.stopped:
        trial = slots.claim(study)
        if trial is None:
            if not waiting.goes_on(study):
                return
            time.sleep(min(2, settings.heartbeat_interval))  # most often the others just finish
            continue
        waiting = Waiting(settings.heartbeat_interval, settings.grace_period)
        frozen = run_one(study, trial, objective, settings.heartbeat_interval)
        for callback in callbacks if frozen else ():
            callback(study, frozen)
        Interrupt.check()


def run_one(study: optuna.Study, trial: optuna.Trial, objective: Objective, heartbeat_interval: int):
    """One trial with heartbeats: COMPLETE, PRUNED or FAIL (any error is caught, kept and printed), or None when
    it was declared stale and run again elsewhere meanwhile (ablate.study.faults.tell); on Ctrl-C / SIGTERM it is
    failed, queued again, and the interrupt goes on up; StorageUnavailable goes on up and leaves it RUNNING, for
    the heartbeat retry."""
    with Heartbeat(study._storage, trial._trial_id, heartbeat_interval):
        try:
            frozen = tell(study, trial, objective(trial))
        except optuna.TrialPruned:
            frozen = tell(study, trial, state=TrialState.PRUNED)
        except KeyboardInterrupt as e:
            if failed := tell(study, trial, state=TrialState.FAIL):
                requeue(study, failed)
                raise KeyboardInterrupt(f"trial {trial.number} was marked FAIL and queued again") from e
            raise
        except StorageUnavailable:
            raise
        except Exception:
            frozen = tell(study, trial, state=TrialState.FAIL)
    release_memory()  # before this worker's next trial (a CUDA out-of-memory trial's cache above all)
    return frozen


def progress(total: int, started: float):
    """A study callback printing one line per finished trial: count, state, value, reason, variant, time."""

    def show(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        n = f"round {trial.user_attrs[ROUND]}" if ROUND in trial.user_attrs else f"{len(done_trials(study))}/{total}"
        value = "" if trial.value is None else f" = {trial.value:.4f}"
        reason = f" ({trial.user_attrs['fail_reason']})" if "fail_reason" in trial.user_attrs else ""
        elapsed = time.time() - started
        console.print(
            f"[{n}] trial {trial.number} {trial.state.name.lower()}{value}{reason}  "
            f"{trial.user_attrs.get('variant', '')}  ({elapsed / 60:.1f} min into the study)"
        )

    return show


def quiet() -> None:
    """Our own progress line says it once: no Optuna per-trial logs; Lightning's banners and the dependency
    warnings a user cannot act on go to each run's log (`ablate.cli.run_log`), not the console."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats, stale trials
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    warnings.filterwarnings("ignore", message="GridSampler is re-evaluating a configuration")  # space_notes says it
    quiet_dependencies()
