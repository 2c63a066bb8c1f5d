"""What a finished sweep shows: the table (also written to runs/<study>/table.md), main effects, where to look."""

from __future__ import annotations

from pathlib import Path

import optuna

from ablate.cli import console, make_console
from ablate.results.factorial import factorial_effects
from ablate.results.formats import effects_to_rich, render, settings, to_rich, varied_keys, verdict_note
from ablate.results.rows import add_deltas, rows_of, study_objective, study_verdicts, verdict_options
from ablate.study.engine import is_worker, run_study
from ablate.study.storage import DEFAULT_STORAGE, load_study, make_storage, redact
from ablate.study.workers import ddp_rank


def show_results(study: optuna.Study, root: Path, storage_url: str, baseline: dict | None = None) -> None:
    """Print the comparison table, write it to `root`/table.md, and say where to look further."""
    rows, (metric, direction) = rows_of(study), study_objective(study)
    v = verdict_options({**study_verdicts(study), "direction": direction})
    if any(r["mean"] is not None for r in rows):  # Δ against the named baseline once it has a result
        named = baseline and any(
            r["mean"] is not None and baseline.items() <= settings(r["variant"]).items() for r in rows
        )
        add_deltas(rows, baseline if named else None, margin=v["margin"], alpha=v["alpha"], direction=direction)
    note = verdict_note(v["alpha"], v["margin"], v["looks"])
    root.mkdir(parents=True, exist_ok=True)
    (root / "table.md").write_text(render(rows, "md", metric, v["alpha"], note))
    out = make_console(stderr=False)
    title = f"study {study.study_name}: mean ± std over seeds, best first"
    out.print(to_rich(rows, title, metric))
    out.print(note)
    effects = factorial_effects(rows) if len(rows) > 2 and len(varied_keys(rows)) > 1 else []
    if effects:  # one swept key: the table already is its effect
        out.print(effects_to_rich(effects, metric))
    where = f"--study {study.study_name}" + (
        f" --storage {redact(storage_url)}" if storage_url != DEFAULT_STORAGE else ""
    )
    console.print(
        f"table: {root / 'table.md'}\nlook further:\n"
        f"  pip install optuna-dashboard && optuna-dashboard {redact(storage_url)}\n"
        f"  python -m ablate.table {where} --format md|latex|csv|json|html\n"
        f"  python -m ablate.report {where}   # one HTML file with the plots\n"
        f"  wandb sync runs/wandb/offline-run-*   # upload the offline W&B runs\n"
        f"  python -m ablate.dashboard {where} --entity E --project P   # W&B workspace"
    )


def run_and_show(
    sweep, target, storage_url: str, workers: int = 1, argv: list[str] = (), gpus: list[str] | None = None
) -> int:
    """Run the study, then (unless this process is one of `--workers N`) print its table."""
    code = run_study(sweep, target, storage_url, workers, argv, gpus=gpus)
    if not is_worker() and ddp_rank() == 0:
        study = load_study(sweep.study.name, make_storage(storage_url))
        show_results(study, Path("runs") / sweep.study.name, storage_url, sweep.baseline)
    return code
