"""What a finished sweep shows: the table (also written to runs/<study>/table.md), main effects, where to look."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import optuna

from ablate.cli import make_console
from ablate.results.formats import fmt_needed
from ablate.results.tables import markdown, study_table
from ablate.results.terminal import print_end
from ablate.study.race import race_summary
from ablate.study.storage import DEFAULT_STORAGE, dashboard_storage, load_study, make_storage, redact
from ablate.study.variants import short_labels


def show_study(sweep, storage_url: str, again: str | None = None) -> optuna.Study:
    """`show_results` of the stored study `sweep` ran (its table, effects and where to look); the study. `again`:
    the command that ran it (cli.command_line), for the conclusion's next step."""
    study = load_study(sweep.study.name, make_storage(storage_url, patience=sweep.study.storage_timeout))
    show_results(study, Path("runs") / sweep.study.name, storage_url, sweep.baseline, again)
    return study


def show_results(
    study: optuna.Study, root: Path, storage_url: str, baseline: dict | None = None, again: str | None = None
) -> None:
    """Print the comparison table fitted to the terminal, the main effects, the conclusion in words and where to
    look further, and write the table under its conclusion to `root`/table.md: what `python -m ablate.table`
    prints for this study (ablate.results.tables), the same columns and values."""
    table = study_table([study], root.parent, default_baseline=baseline)
    rows, metric, v = table.rows, table.metric, table.verdicts
    root.mkdir(parents=True, exist_ok=True)
    (root / "table.md").write_text(markdown(table))
    out = make_console(stderr=False)
    left = race_summary(study) or (v["looks"] and left_open(rows, v["looks"][1]))
    title = f"study {study.study_name}: mean ± std over seeds of {metric}, best first"
    print_end(out, table, title, [left] if left else [], again)
    out.print(f"table: {root / 'table.md'}\nlook further:\n" + "\n".join(look_further(study, storage_url)))


def look_further(study: optuna.Study, storage_url: str) -> list[str]:
    """Commands that work as printed, here and now: the table in other formats, the report, the W&B workspace's
    spec; the Optuna dashboard when it is installed; W&B's upload when there are offline runs to upload."""
    where = f"--study {study.study_name}" + (
        f" --storage {redact(storage_url)}" if storage_url != DEFAULT_STORAGE else ""
    )
    lines = [
        f"  python -m ablate.table {where} --format md   # or latex, csv, json, html",
        f"  python -m ablate.report {where}   # one HTML file with the plots",
        f"  python -m ablate.dashboard {where} --dry-run   # the W&B workspace; --entity and --project to build it",
    ]
    if importlib.util.find_spec("optuna_dashboard"):
        lines.append(f"  optuna-dashboard {dashboard_storage(storage_url)}")
    if any(Path("runs/wandb").glob("offline-run-*")):
        lines.append("  wandb sync runs/wandb/offline-run-*   # upload the offline W&B runs (after wandb login)")
    return lines


def left_open(rows: list[dict], max_seeds: int) -> str | None:
    """After --until-decided: the rows it left undecided and why (at --max-seeds, or an estimate beyond it, so no
    seeds were spent there), and how to go on; None when every row with a result is decided."""
    open_ = [r for r in rows if r.get("verdict") == "undecided"]
    if not open_:
        return None
    label = short_labels(rows)  # as the report names rows
    capped = [label[r["variant"]] for r in open_ if r["n"] >= max_seeds]
    beyond = sorted(
        (r for r in open_ if r["n"] < max_seeds and (r.get("seeds_needed") or 0) > max_seeds),
        key=lambda r: r["seeds_needed"],
    )
    rest = len(open_) - len(capped) - len(beyond)
    parts = [f"{len(capped)} at --max-seeds {max_seeds} ({', '.join(capped)})"] if capped else []
    if beyond:
        estimates = ", ".join(f"{label[r['variant']]} {fmt_needed(r['seeds_needed'])}" for r in beyond)
        parts.append(f"{len(beyond)} whose estimate is above {max_seeds} seeds, so none were added ({estimates})")
    if rest:
        parts.append(f"{rest} still open (the same command goes on with them)")
    return (
        f"--until-decided left {len(open_)} row(s) undecided: {'; '.join(parts)}. The same command with a larger "
        "--max-seeds goes on (its α per look is smaller, so estimates grow); the runs so far are kept."
    )
