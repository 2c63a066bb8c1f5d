"""A study as it stands, read from its storage alone (`python -m ablate.status`): trials done of the total and the
rounds of added seeds, each running trial (seed, epoch, host, worker, GPU, elapsed), the failed ones and why, and an
estimate of the time left. The running trials record what it reads as they go (ablate.study.progress)."""

from __future__ import annotations

import datetime
import time

import optuna
from optuna.trial import TrialState

from ablate.study.decide import PLAN as SEED_PLAN
from ablate.study.decide import ROUND
from ablate.study.race import RACE
from ablate.study.workers import counted

HOST, PID, WORKER, GPUS, JOB = "host", "pid", "worker", "worker_gpus", "slurm_task"  # a trial's user attrs
AT = "progress"  # a running trial's user attr: {seed, epoch, epochs, since, device} of the seed it trains
PLAN = "plan"  # the study's user attr: {n_trials, seeds, rounds, max_seeds} of the last command that ran it


def duration(seconds: float) -> str:
    """'42 s', '3 min 05 s', '2 h 07 min'."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def plan_of(study: optuna.Study) -> dict:
    """The study's plan (`PLAN`; a study run before it was recorded: the total and seeds of its first sweep)."""
    sweep = study.user_attrs.get("sweep") or {}
    first = {"n_trials": sweep.get("n_trials"), "seeds": len(sweep.get("seeds") or ()) or None}
    return {"rounds": None, "max_seeds": None, **first, **(study.user_attrs.get(PLAN) or {})}


def started(t: optuna.trial.FrozenTrial) -> float | None:
    return t.datetime_start.timestamp() if t.datetime_start else None


def counts(trials: list, plan: dict) -> dict:
    """{done, total, running, waiting, complete, pruned, failed} of the planned trials (`counted`: no round, no
    failed trial run again) and the running and waiting trials of every kind."""
    planned = counted(trials)
    done = [t for t in planned if t.state.is_finished()]
    by = {s: sum(t.state == s for t in done) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    return {
        "done": len(done),
        "total": plan["n_trials"] if plan["n_trials"] is not None else len(planned),
        "running": sum(t.state == TrialState.RUNNING for t in trials),
        "waiting": sum(t.state == TrialState.WAITING for t in trials),
        "complete": by[TrialState.COMPLETE],
        "pruned": by[TrialState.PRUNED],
        "failed": by[TrialState.FAIL],
    }


def trials_line(c: dict, plan: dict) -> str:
    """'3 of 4 trials done (2 complete, 1 failed), 1 running, 0 waiting; 2 seeds a trial'."""
    kinds = ", ".join(f"{c[k]} {k}" for k in ("complete", "pruned", "failed") if c[k]) or "none yet"
    seeds = f"; {plan['seeds']} seed(s) a trial" if plan["seeds"] else ""
    return f"{c['done']} of {c['total']} trials done ({kinds}), {c['running']} running, {c['waiting']} waiting{seeds}"


def rounds_line(study: optuna.Study, trials: list, plan: dict) -> str | None:
    """The rounds of added seeds (--until-decided, --race): each round's runs done, running; None without any."""
    rounds: dict[int, list] = {}
    for t in trials:
        if ROUND in t.user_attrs:
            rounds.setdefault(t.user_attrs[ROUND], []).append(t)
    if not rounds and not plan["rounds"]:
        return None
    shown = [round_part(n, ts) for n, ts in sorted(rounds.items())]
    what = plan["rounds"] or "rounds of added seeds"
    limit = f", at most {plan['max_seeds']} seeds a variant" if plan["max_seeds"] else ""
    out = len(study.user_attrs.get(RACE) or {})
    race = f"; {out} variant(s) out of the race" if out else ""
    return f"then {what}{limit}: " + ("; ".join(shown) or "none yet (planned once the planned trials are done)") + race


def round_part(n: int, trials: list) -> str:
    """'round 2: 1 of 4 runs done, 2 running' (each trial of a round is one seed of one variant)."""
    running = sum(t.state == TrialState.RUNNING for t in trials)
    done = sum(t.state.is_finished() for t in trials)
    return f"round {n}: {done} of {len(trials)} runs done" + (f", {running} running" if running else "")


def running_line(t: optuna.trial.FrozenTrial, plan: dict, now: float) -> str:
    """'t1 s1 (seed 2 of 2)  epoch 3/8  for 21 s (this seed 6 s)  host h  worker 0  pid 42  GPU none  VARIANT'."""
    a, at = t.user_attrs, t.user_attrs.get(AT) or {}
    seeds = list(a.get(SEED_PLAN) or [])
    seed = at.get("seed")
    which = f" (seed {seeds.index(seed) + 1} of {len(seeds)})" if seed in seeds else ""
    epoch = f"epoch {at['epoch']}/{at.get('epochs') or '?'}" if "epoch" in at else "starting"
    since = f" (this seed {duration(now - at['since'])})" if "since" in at and len(seeds) > 1 else ""
    elapsed = f"for {duration(now - started(t))}{since}" if started(t) else "not started"
    device = at.get("device")
    gpu = a.get(GPUS) or (device if device and device != "cpu" else "none" if device else "?")
    worker = "-" if a.get(WORKER) is None else a[WORKER]  # "-": not a worker of a pool
    where = f"host {a.get(HOST, '?')}  worker {worker}  pid {a.get(PID, '?')}  GPU {gpu}"
    job = f"  SLURM task {a[JOB]}" if a.get(JOB) else ""
    label = f"t{t.number} s{seed if seed is not None else '?'}{which}"
    return f"{label}  {epoch}  {elapsed}  {where}{job}  {a.get('variant', '')}".rstrip()


def failed_line(t: optuna.trial.FrozenTrial, again: dict[int, int]) -> str:
    """'t4  FloatingPointError: nan  VARIANT  (run again as t5)'."""
    a = t.user_attrs
    reason = a.get("fail_reason") or (
        "interrupted (Ctrl-C or SIGTERM)" if a.get("interrupted") else "its worker stopped (no heartbeat in time)"
    )
    rerun = f"  (run again as t{again[t.number]})" if t.number in again else ""
    return f"t{t.number}  {reason}  {a.get('variant', '')}{rerun}"


def time_left(trials: list, plan: dict, now: float) -> str:
    """An estimate: the runs (trial × seed) left, at the mean time of a complete trial's run, shared by the workers
    running now, less what the running seeds have done."""
    per = [
        (t.datetime_complete.timestamp() - started(t)) / len(t.user_attrs["seeds"])
        for t in trials
        if t.state == TrialState.COMPLETE and t.datetime_complete and started(t) and t.user_attrs.get("seeds")
    ]
    left, running = runs_left(trials, plan), [t for t in trials if t.state == TrialState.RUNNING]
    later = "; rounds not planned yet are not counted" if plan["rounds"] else ""
    if not left:
        return f"time left: none{later}"
    if not per:
        return f"time left: not known until a trial completes ({left} run(s) of a trial's seeds left){later}"
    run = sum(per) / len(per)
    done = sum(min(now - (t.user_attrs.get(AT) or {}).get("since", now), run) for t in running)
    how = f"{left} run(s) left at {duration(run)} a run, the mean of {len(per)} complete trial(s)"
    if not running:
        return f"time left: nothing runs now; about {duration(left * run)} for one worker (an estimate: {how}){later}"
    eta = max(left * run - done, 0) / len(running)
    return f"time left: about {duration(eta)} (an estimate: {how}, shared by {len(running)} running worker(s)){later}"


def runs_left(trials: list, plan: dict) -> int:
    """Runs (a trial's seeds) not done: those of the trials not created yet, of the waiting ones, and of the running
    ones, their current seed included."""
    seeds = plan["seeds"] or 1
    planned = lambda t: len(t.user_attrs.get(SEED_PLAN) or ()) or seeds  # noqa: E731
    left = max((plan["n_trials"] or 0) - len(counted(trials)), 0) * seeds
    left += sum(planned(t) for t in trials if t.state == TrialState.WAITING)
    running = [t for t in trials if t.state == TrialState.RUNNING]
    return left + sum(max(planned(t) - len(t.user_attrs.get("seeds") or ()), 1) for t in running)


def elapsed_line(trials: list, now: float) -> str | None:
    """Since the first trial started; once nothing runs or waits, from its start to the last trial's end."""
    starts = [s for t in trials if (s := started(t))]
    if not starts:
        return None
    if any(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in trials):
        return f"elapsed: {duration(now - min(starts))} since the first trial started"
    ends = [t.datetime_complete.timestamp() for t in trials if t.datetime_complete]
    return (
        f"elapsed: {duration(max(ends, default=now) - min(starts))} from the first trial's start to the last one's end"
    )


def study_lines(study: optuna.Study, where: str, now: float | None = None) -> list[str]:
    """What `python -m ablate.status --study NAME` prints about one study."""
    now = time.time() if now is None else now
    trials, plan = study.get_trials(deepcopy=False), plan_of(study)
    clock = datetime.datetime.fromtimestamp(now).strftime("%Y-%m-%d %H:%M:%S")
    lines = [f"study {study.study_name} in {where}, at {clock}", f"  {trials_line(counts(trials, plan), plan)}"]
    if rounds := rounds_line(study, trials, plan):
        lines.append(f"  {rounds}")
    running = [t for t in trials if t.state == TrialState.RUNNING]
    lines += (
        [f"  running ({len(running)}):"] + [f"    {running_line(t, plan, now)}" for t in running] if running else []
    )
    again = {t.system_attrs["failed_trial"]: t.number for t in trials if "failed_trial" in t.system_attrs}
    failed = [t for t in trials if t.state == TrialState.FAIL]
    lines += [f"  failed ({len(failed)}):"] + [f"    {failed_line(t, again)}" for t in failed] if failed else []
    lines += [f"  {line}" for line in (elapsed_line(trials, now), time_left(trials, plan, now)) if line]
    return lines


def summary_line(study: optuna.Study) -> str:
    """One line for a storage that holds several studies: 'NAME: 3 of 4 trials done (...), 1 running, ...'."""
    trials, plan = study.get_trials(deepcopy=False), plan_of(study)
    return f"{study.study_name}: {trials_line(counts(trials, plan), plan)}"
