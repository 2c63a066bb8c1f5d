"""`python -m ablate.table`: comparison tables from Optuna trials, one row per variant, best first.

mean ± sample std (ddof=1) over seeds, n, Δ vs a baseline row in points with its confidence interval, raw and
Holm-adjusted p (paired t-test over shared seeds, else Welch), a verdict (better / worse / equivalent within
--margin / undecided, with the seeds that would decide), neck and total parameters, GFLOPs, and forward latency
(ablate's own models measured on this machine; a LightningCLI project's as its runs recorded it).
"""

from __future__ import annotations

import sys
from pathlib import Path

from ablate import cli


def main(argv: list[str] | None = None) -> int:
    """Command line: read the studies, print or write the table."""
    from ablate.results.formats import FORMATS

    p = cli.parser("table", __doc__)
    p.add_argument("--study", action="append", help="study name (repeat to merge studies; default: all)")
    cli.add_storage_argument(p)
    p.add_argument("--format", choices=FORMATS, default="md")
    p.add_argument(
        "--baseline",
        help="KEY=VALUE,... picking the row Δ is measured against (default: the study's "
        "baseline, e.g. an experiment's `baseline:`, else the best row)",
    )
    p.add_argument(
        "--metric",
        help="default: the study's own metric (val/mIoU, or a LightningCLI sweep's `metric`), "
        "each seed's best epoch; another val/ metric: each seed's last epoch",
    )
    cli.add_verdict_arguments(p)
    p.add_argument(
        "--no-latency",
        action="store_true",
        help="show the latency each variant's runs recorded as they ended (the least over seeds) instead of "
        "measuring ablate's own models again here; a LightningCLI project's always shows what its runs recorded",
    )
    p.add_argument("--runs", default="runs", help="folder holding <study>/t<trial>-s<seed>/ (default: runs)")
    p.add_argument(
        "--from-wandb",
        metavar="PATH_OR_PROJECT",
        help="build the table from W&B runs instead: runs/wandb (offline folders) or ENTITY/PROJECT",
    )
    p.add_argument("--out", help="write to this file instead of stdout")
    p.add_argument(
        "--check",
        action="store_true",
        help="check the studies' invariants instead (no trial RUNNING without a heartbeat, no seed of a variant "
        "completed twice, every complete trial with its values, run folders under runs/ and W&B runs); exit 1 "
        "naming what is wrong and how to repair it",
    )
    args = cli.parse(p, argv)
    return cli.guarded(lambda: _check(args) if args.check else _table(args))


def _check(args) -> int:
    from pathlib import Path

    from ablate.study.check import REPAIR, check_study
    from ablate.study.storage import load_study, make_storage, resolve, study_names

    storage = make_storage(resolve(args.storage))
    failed = 0
    for name in args.study or study_names(storage):
        study = load_study(name, storage)
        problems = check_study(study, Path("runs"))
        for problem in problems:
            cli.console.print(f"study {name}: {problem}")
        n = len(study.get_trials(deepcopy=False))
        cli.console.print(f"study {name}: {len(problems) or 'no'} problem(s) in {n} trial(s)")
        failed += bool(problems)
    if failed:
        cli.console.print(REPAIR)
    return 1 if failed else 0


def _table(args) -> int:
    from ablate.errors import ConfigError
    from ablate.results.formats import render, verdict_note
    from ablate.results.rows import add_deltas, measure_latencies, parse_baseline, verdict_options, wandb_rows

    if args.from_wandb:
        metric, stored = args.metric or "val/mIoU", {}
        rows = wandb_rows(args.from_wandb, metric)
    else:
        rows, metric, stored = _storage_rows(args)
    if not rows:
        raise ConfigError(f"no finished trials in {args.from_wandb or ', '.join(args.study or ['this storage'])}")
    v = verdict_options(stored, args.margin, args.alpha, False if args.no_moderation else None)
    baseline = parse_baseline(args.baseline) or v["baseline"]  # default: the study's own, else the best row
    add_deltas(rows, baseline, margin=v["margin"], alpha=v["alpha"], direction=v["direction"], moderate=v["moderate"])
    if not args.no_latency:
        measure_latencies(rows)
    text = render(
        rows, args.format, metric, v["alpha"], verdict_note(v["alpha"], v["margin"], v["looks"], v["moderate"])
    )
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


def _storage_rows(args) -> tuple[list[dict], str, dict]:
    """The rows of the named studies (default: all), the metric they show, and how the first study decides
    (ablate.results.rows.study_verdicts, with its direction); merged studies share an objective."""
    from ablate.errors import ConfigError
    from ablate.results.rows import latency_from_runs, run_folders, study_objective, study_rows, study_verdicts
    from ablate.study.storage import load_study, make_storage, resolve, study_names

    storage = make_storage(resolve(args.storage))
    studies = [load_study(name, storage) for name in args.study or study_names(storage)]
    objectives = {s.study_name: study_objective(s) for s in studies}
    if len(set(objectives.values())) > 1:
        raise ConfigError(f"these studies optimize different metrics ({objectives}); give one --study at a time")
    objective, direction = next(iter(objectives.values()), ("val/mIoU", "maximize"))
    trials = [t for s in studies for t in s.get_trials(deepcopy=False)]
    stored = {**(study_verdicts(studies[0]) if studies else {}), "direction": direction}
    rows = study_rows(trials, args.metric, objective, direction)
    latency_from_runs(rows, run_folders(Path(args.runs), studies, rows))  # what the runs recorded as they ended
    return rows, args.metric or objective, stored


if __name__ == "__main__":
    sys.exit(main())
