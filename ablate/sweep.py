"""`python -m ablate.sweep [SWEEP.yaml] [key=value ...]`: an Optuna study over neck variants, several seeds each."""

from __future__ import annotations

import dataclasses
import sys

from ablate import cli


def main(argv: list[str] | None = None) -> int:
    """Command line."""
    p = cli.parser(
        "sweep",
        __doc__,
        "sweep file (default: the packaged default sweep, as sweeps/default.yaml) and "
        "dotted overrides of its base config, e.g. trainer.max_epochs=2, in any order with the flags",
    )
    p.add_argument("--study", help="study name (default: the sweep file's study.name)")
    cli.add_storage_argument(p)
    p.add_argument(
        "--storage-timeout",
        type=int,
        metavar="SECONDS",
        help="how long a worker waits out a storage outage (server restart, failover, dropped connection, "
        "SQLite locked) before it stops, its trial left for the heartbeat retry (default: the sweep's "
        "study.storage_timeout, 300)",
    )
    p.add_argument("--n-trials", type=int, help="study-wide total of trials")
    p.add_argument(
        "--seeds",
        help="comma-separated seeds a trial trains, e.g. 0,1,2 (those its variant has already "
        "run are replaced by the lowest unused ones)",
    )
    p.add_argument(
        "--workers",
        type=_workers,
        help="workers on this machine, each training one trial at a time (default: the sweep's study.workers, "
        "1 unless it says otherwise; the default sweep says auto), forked from this "
        "command once it has imported everything; 'auto': as many as the cores, the GPUs' free memory "
        "(or the system's) and the trials allow, saying why; the same command on other machines joins "
        "the same study",
    )
    p.add_argument(
        "--gpus",
        help="GPUs the workers share, e.g. 0,1,2,3 (default: every visible GPU); each worker "
        "sees its own via CUDA_VISIBLE_DEVICES, trainer.devices=k of them a trial, several "
        "workers a GPU when there are more workers than GPUs; 'none': no assignment",
    )
    cli.add_verdict_arguments(p, until_decided=True)
    p.add_argument(
        "--race",
        action="store_true",
        help="after the planned trials, add seeds in rounds to the variants still in the race to the best: "
        "one decided worse than the leader gets no more (F-Race; or study.race: true)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the space, resolve every grid point, print a sample trial's config; train nothing",
    )
    add_slurm_arguments(p)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = cli.parse(p, argv)
    slurm = args.slurm or args.slurm_option or args.slurm_script or args.wait
    return cli.guarded(lambda: _submit(args, argv) if slurm else _sweep(args, argv))


def add_slurm_arguments(p) -> None:
    """--slurm N and what goes with it: --slurm-option, --slurm-script, --wait (ablate.study.slurm)."""
    p.add_argument(
        "--slurm",
        type=_tasks,
        metavar="N",
        help="submit the study as a SLURM job array of N tasks, each this command (without --storage: the URL "
        "reaches them as $ABLATE_STORAGE) as a pool of --workers (default auto: the task's CPUs and GPUs), on a "
        "storage the nodes share (PostgreSQL, or journal:///PATH.log); sbatch settings from the sweep file's "
        "slurm: mapping; prints the job id, the logs and how to watch and cancel it, then exits",
    )
    p.add_argument(
        "--slurm-option",
        action="append",
        metavar="KEY=VALUE",
        help="an sbatch setting over the sweep file's slurm: mapping (repeatable): partition, time, cpus_per_task, "
        "gpus_per_task, mem, account, setup (a shell line run first; adds one), extra (any sbatch flag; adds one)",
    )
    p.add_argument("--slurm-script", action="store_true", help="with --slurm: print the sbatch script, submit nothing")
    p.add_argument(
        "--wait", action="store_true", help="with --slurm: wait until every task has left the queue, print the table"
    )


def _tasks(text: str) -> int:
    """--slurm: a count of 1 or more tasks."""
    import argparse

    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise argparse.ArgumentTypeError(f"{text!r}: give 1 or more tasks")


def _submit(args, argv: list[str]) -> int:
    """--slurm N: the storage (one the nodes share), the sweep and the sbatch settings checked, then the array
    submitted (or, with --slurm-script, its script printed); with --wait, its table once every task has ended."""
    from ablate.errors import ConfigError
    from ablate.results.summary import show_study
    from ablate.study import slurm
    from ablate.study.slurm_jobs import create_study, job_end, submit_study, wait_for
    from ablate.study.space import load_sweep
    from ablate.study.storage import check_kind, resolve
    from ablate.study.targets import make_target

    if not args.slurm:
        raise ConfigError("--slurm-option, --slurm-script and --wait go with --slurm N (a SLURM job array)")
    if args.dry_run:
        raise ConfigError("--slurm with --dry-run: use --slurm N --slurm-script to see what would be submitted")
    url = resolve(args.storage)
    check_kind(url)
    slurm.check_shared(url)  # a SQLite file stops here: nothing written, nothing submitted
    path, overrides = cli.split_inputs(args.inputs)
    sweep = _with_flags(load_sweep(path, overrides), args)
    make_target(sweep)  # every value of the space resolved here, not in a task that waited in the queue
    found = slurm.settings(path, args.slurm_option)
    text = slurm.script(sweep.study.name, args.slurm, found, slurm.task_argv(argv), url, args.workers or "auto")
    if args.slurm_script:
        print(text, end="")
        return 0
    create_study(sweep, url)
    job = submit_study(text, sweep.study.name, args.slurm, url)
    if not args.wait:
        return 0
    wait_for(job)
    return job_end(job, sweep, show_study(sweep, url))


def _workers(text: str) -> int | str:
    """--workers: a count of 1 or more, or 'auto'."""
    import argparse

    if text == "auto" or (text.isdigit() and int(text) >= 1):
        return text if text == "auto" else int(text)
    raise argparse.ArgumentTypeError(f"{text!r}: give 1 or more workers, or 'auto'")


def _sweep(args, argv: list[str]) -> int:
    import torch

    from ablate.results.summary import show_study
    from ablate.study.engine import Interrupt, prints_the_end, quiet, run_study
    from ablate.study.gpus import plan_gpus
    from ablate.study.outage import EXIT_CODE, StorageUnavailable
    from ablate.study.pool import before_fork
    from ablate.study.space import load_sweep, space_notes
    from ablate.study.storage import check_kind, resolve
    from ablate.study.targets import make_target

    threads = before_fork()  # the sweep file may ask for workers (study.workers)
    Interrupt.install()  # Ctrl-C and SIGTERM fail the running trial (and queue it again), never orphan it
    quiet()
    path, overrides = cli.split_inputs(args.inputs)
    check_kind(resolve(args.storage))  # a storage that cannot be one stops here, before any data is made
    sweep = _with_flags(load_sweep(path, overrides), args)
    if sweep.direction_inferred and sweep.metric != "val/mIoU":
        cli.console.print(
            f"{sweep.metric}: {sweep.study.direction}d (inferred from its name; set study.direction in the sweep "
            "file to choose)"
        )
    target = make_target(sweep)
    for note in space_notes(sweep):
        cli.console.print(f"note: {note}", markup=False)
    workers = auto_workers(sweep, target, args.gpus) if sweep.study.workers == "auto" else sweep.study.workers
    gpus = plan_gpus(workers, args.gpus, sweep)  # a bad --gpus stops here, before anything trains
    if workers == 1 and not gpus:
        torch.set_num_threads(threads)  # no fork: this process trains, on every core
    if args.dry_run:
        return dry_run(sweep, target)
    try:
        each = cli.without_flags(argv, "--workers", "--gpus")  # the command each worker runs
        code = run_study(sweep, target, resolve(args.storage), workers, each, gpus=gpus)
        if prints_the_end(code):
            show_study(sweep, resolve(args.storage), cli.command_line("sweep", argv))
        return code
    except StorageUnavailable as e:
        return cli.error(e, EXIT_CODE)
    except KeyboardInterrupt as e:  # cli.guarded prints it: what stopped, and what is kept
        kept = "the study keeps its finished trials: run the same command to go on"
        raise KeyboardInterrupt(f"{e or 'Ctrl-C'}; {kept}") from None


def auto_workers(sweep, target, chosen: str | None) -> int:
    """--workers auto: the count `ablate.study.gpus.auto_workers` picks, printed with why."""
    from ablate.study.gpus import auto_workers as pick
    from ablate.study.pool import cores

    estimate = getattr(target, "memory_bytes", None)
    n, why = pick(sweep, estimate() if estimate else None, chosen, cores())
    cli.console.print(f"--workers auto: {n} worker(s): {why}")
    return n


def _with_flags(sweep, args):
    from ablate.errors import ConfigError
    from ablate.study.decide import with_verdict_flags

    changes = {"study": with_verdict_flags(sweep.study, args)}
    if args.study:
        changes["study"] = dataclasses.replace(changes["study"], name=args.study)
    if args.storage_timeout is not None:
        changes["study"] = dataclasses.replace(changes["study"], storage_timeout=args.storage_timeout)
    if args.workers is not None:
        changes["study"] = dataclasses.replace(changes["study"], workers=args.workers)
    if args.n_trials is not None:
        changes["n_trials"] = args.n_trials
    if args.seeds:
        try:
            changes["seeds"] = tuple(int(s) for s in args.seeds.split(","))
        except ValueError:
            raise ConfigError(f"--seeds {args.seeds!r} must be comma-separated integers, e.g. 0,1,2") from None
    return dataclasses.replace(sweep, **changes)


def dry_run(sweep, target) -> int:
    """Print the space and study settings, every grid point resolved through the target (a space of choices only),
    and one sampled trial's run config (plain YAML, never wrapped)."""
    import optuna
    import yaml

    from ablate.study.space import suggest, variant_label

    print(
        yaml.safe_dump(
            {
                "study": dataclasses.asdict(sweep.study),
                "n_trials": sweep.n_trials,
                "seeds": list(sweep.seeds),
                "space": sweep.space,
            },
            sort_keys=False,
        )
    )
    print("\n".join(grid_lines(sweep, target)))
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=sweep.study.sampler_seed)).ask()
    params = suggest(trial, sweep.space)
    print(f"# sample trial: {variant_label(params)}")
    print(yaml.safe_dump(target.config(params), sort_keys=False))
    return 0


def grid_lines(sweep, target) -> list[str]:
    """'# i/N VARIANT (config DIGEST)' for every point of a space of choices, each resolved by `target` (a bad one
    raises ConfigError naming its values); a space with ranges has no grid: nothing."""
    import itertools

    from ablate.study.space import grid_choices, variant_label
    from ablate.study.workers import config_digest

    if any("choices" not in spec for spec in sweep.space.values()):
        return ["# a space with ranges has no grid: one sample follows"]
    grid = grid_choices(sweep.space)
    points = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    return [f"# {len(points)} grid point(s), each resolved (equal digests: equal configs):"] + [
        f"#   {i}/{len(points)} {variant_label(p)} (config {config_digest(target.config(p))})"
        for i, p in enumerate(points, 1)
    ]


if __name__ == "__main__":
    sys.exit(main())
