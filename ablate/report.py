"""`python -m ablate.report --study NAME`: one self-contained HTML report of a study (plotly.js inline, no network).

Its conclusion in words, the comparison table (ablate.table's, on --metric in its direction), the main effects beside
Optuna's parameter importances (with why they can differ), each variant's mean as the search went, parallel
coordinates, mIoU vs parameters and vs GFLOPs (axes from zero) with error bars, per-class IoU across variants,
receptive fields, and example predictions of the best variant beside the baseline (or the worst) from the run folders.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ablate import cli


def main(argv: list[str] | None = None) -> int:
    """Command line: read the study and its run folders, write the report."""
    p = cli.parser("report", __doc__)
    p.add_argument("--study", required=True, help="study name")
    cli.add_storage_argument(p)
    p.add_argument("--runs", default="runs", help="folder holding <study>/t<trial>-s<seed>/ (default: runs)")
    p.add_argument(
        "--baseline", help="KEY=VALUE,... picking the baseline row (default: the study's baseline, else the best)"
    )
    cli.add_metric_arguments(p)
    cli.add_verdict_arguments(p)
    p.add_argument("--out", help="the HTML file to write (default: RUNS/<study>/report.html)")
    args = cli.parse(p, argv)
    return cli.guarded(lambda: _report(args))


def _report(args) -> int:
    from ablate.errors import ConfigError
    from ablate.results.html_report import build
    from ablate.results.tables import study_table
    from ablate.study.storage import load_study, read_storage, resolve
    from ablate.study.variants import parse_baseline

    study = load_study(args.study, read_storage(resolve(args.storage)))  # only the report itself is written
    if not Path(args.runs).is_dir():
        raise ConfigError(f"--runs {args.runs!r} is not a folder; it should hold {args.study}/t<trial>-s<seed>/")
    table = study_table(
        [study],
        Path(args.runs),
        metric=args.metric,
        direction=args.direction,
        at=args.at,
        baseline=parse_baseline(args.baseline),
        margin=args.margin,
        alpha=args.alpha,
        moderate=False if args.no_moderation else None,
    )
    if table.base is None:
        raise ConfigError(f"study {args.study!r} has no complete trial yet")
    check_run_folders(study, table, Path(args.runs))
    out = Path(args.out or Path(args.runs) / args.study / "report.html")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(build(study, table))
    cli.console.print(f"report: {out} ({out.stat().st_size / 1e6:.1f} MB, opens offline)")
    return 0


def check_run_folders(study, table, runs: Path) -> None:
    """The report reads per-class IoU, receptive fields, ERF and predictions from the run folders (`table.runs`):
    one warning line naming the variants with a result that have none, and where they were looked for."""
    from ablate.study.variants import short_labels

    done = [r["variant"] for r in table.rows if r["mean"] is not None]
    missing = [v for v in done if not table.runs.get(v)]
    if missing:
        labels, where = short_labels(table.rows), runs / study.study_name
        which = "any variant" if len(missing) == len(done) else ", ".join(labels[v] for v in missing)
        cli.warn(
            f"no run folder under {where}/ (t<trial>-s<seed>/summary.json) for {which}: the report shows the table "
            "but not their per-class IoU, receptive fields, ERF or predictions (run it from the folder the sweep "
            "ran in, or give --runs)"
        )


if __name__ == "__main__":
    sys.exit(main())
