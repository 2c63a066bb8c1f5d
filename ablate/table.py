"""`python -m ablate.table`: comparison tables from Optuna trials, one row per variant, best first.

mean ± sample std (ddof=1) over seeds, n, Δ vs a baseline row (in points for a fraction such as mIoU, else in the
metric's own units) with its confidence interval, raw and Holm-adjusted p (paired t-test over shared seeds, else
Welch), a verdict (better / worse / equivalent within --margin / undecided, with the seeds that would decide), neck
and total parameters, GFLOPs, and forward latency (as the runs measured it when they ended).
"""

from __future__ import annotations

import sys
from pathlib import Path

from ablate import cli
from ablate.errors import ConfigError


def main(argv: list[str] | None = None) -> int:
    """Command line: read the studies, print or write the table."""
    from ablate.results.formats import FORMATS

    p = cli.parser("table", __doc__)
    p.add_argument("--study", action="append", help="study name (repeat to merge studies; default: all)")
    cli.add_storage_argument(p)
    p.add_argument(
        "--format",
        choices=("text", *FORMATS),
        help="text: the table fitted to the terminal ($COLUMNS), its conclusion in words under it; md: Markdown, the "
        "conclusion above it (as runs/<study>/table.md) (default: text on a terminal, md when piped or with --out)",
    )
    p.add_argument(
        "--baseline",
        help="KEY=VALUE,... picking the row Δ is measured against (default: the study's "
        "baseline, e.g. an experiment's `baseline:`, else the best row)",
    )
    cli.add_metric_arguments(p)
    cli.add_verdict_arguments(p)
    p.add_argument(
        "--measure-latency",
        action="store_true",
        help="measure ablate's own models' forward latency again on this machine (batch 1, one thread) instead of "
        "showing what each variant's runs recorded as they ended (the least over seeds)",
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
    from ablate.study.storage import load_study, read_storage, resolve, study_names

    storage = read_storage(resolve(args.storage))
    failed = 0
    for name in args.study or study_names(storage):
        study = load_study(name, storage)
        problems = check_study(study, Path(args.runs))
        for problem in problems:
            cli.console.print(f"study {name}: {problem}")
        n = len(study.get_trials(deepcopy=False))
        cli.console.print(f"study {name}: {len(problems) or 'no'} problem(s) in {n} trial(s)")
        failed += bool(problems)
    if failed:
        cli.console.print(REPAIR)
    return 1 if failed else 0


def _table(args) -> int:
    from ablate.results.formats import render
    from ablate.results.tables import markdown
    from ablate.study.variants import parse_baseline

    if Path(args.runs).exists() and not Path(args.runs).is_dir():
        raise ConfigError(f"--runs {args.runs!r} is not a folder; it should hold <study>/t<trial>-s<seed>/")
    from ablate.study.storage import redact, resolve

    options = {
        "baseline": parse_baseline(args.baseline),
        "margin": args.margin,
        "alpha": args.alpha,
        "moderate": False if args.no_moderation else None,
        "measure_latency": args.measure_latency,
    }
    table = _wandb_table(args, options) if args.from_wandb else _storage_table(args, options)
    if not table.rows:
        where = args.from_wandb or ", ".join(args.study or [redact(resolve(args.storage))])
        raise ConfigError(f"no finished trials in {where}")
    fmt = args.format or ("text" if sys.stdout.isatty() and not args.out else "md")
    if fmt == "text":
        return _print_text(table, args)
    v = table.verdicts
    text = (
        markdown(table)
        if fmt == "md"
        else render(table.rows, fmt, table.metric, v["alpha"], table.note, table.direction)
    )
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


def _print_text(table, args) -> int:
    """The terminal's table (ablate.results.terminal), its main effects and its conclusion in words."""
    from ablate.results.terminal import print_end

    if args.out:
        raise ConfigError("--format text is for the terminal; --out writes md, latex, csv, json or html")
    names = ", ".join(args.study or ["every study"])
    print_end(cli.make_console(stderr=False), table, f"{names}: mean ± std over seeds of {table.metric}, best first")
    return 0


def _storage_table(args, options: dict):
    """The table of the named studies (default: all) in the storage (ablate.results.tables.study_table)."""
    from ablate.results.tables import study_table
    from ablate.study.storage import load_study, read_storage, resolve, study_names

    storage = read_storage(resolve(args.storage))
    studies = [load_study(name, storage) for name in args.study or study_names(storage)]
    return study_table(studies, Path(args.runs), metric=args.metric, direction=args.direction, at=args.at, **options)


def _wandb_table(args, options: dict):
    """The table of W&B trial runs: the metric in its own direction (given, else inferred from its name)."""
    from ablate.results.runs import wandb_rows
    from ablate.results.tables import finish
    from ablate.stats.directions import metric_direction

    metric = args.metric or "val/mIoU"
    direction, how = metric_direction(metric, args.direction)
    return finish(wandb_rows(args.from_wandb, metric, direction), metric, direction, how, {}, **options)


if __name__ == "__main__":
    sys.exit(main())
