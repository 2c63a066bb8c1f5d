"""The comparison table of stored studies, built once for `ablate.table`, the end of a sweep (console and
runs/<study>/table.md) and the report: the same rows, columns and values wherever it is shown."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import optuna

from ablate.errors import ConfigError
from ablate.results.conclusion import conclusion
from ablate.results.formats import order_note, render, varied_keys, verdict_note
from ablate.results.runs import latency_from_runs, measure_latencies, run_folders
from ablate.stats.directions import delta_scale, delta_unit, metric_direction, values_of
from ablate.stats.factorial import factorial_effects
from ablate.study.variants import add_deltas, settings, study_objective, study_rows, study_verdicts, verdict_options


@dataclass
class Table:
    rows: list[dict]  # best first, each with its verdict against `base`
    metric: str  # the metric shown
    direction: str  # its direction: "maximize" | "minimize"
    verdicts: dict  # margin, alpha, looks, moderate, ... (ablate.results.runs.verdict_options)
    base: dict | None  # the baseline row (None when no row has a result yet)
    note: str  # how the rows are ordered and how the verdicts were reached
    runs: dict = field(default_factory=dict)  # {variant: its run folders} (ablate.results.runs.run_folders), read once
    effects: list = field(default_factory=list)  # main effects and interactions (ablate.stats.factorial), or []


def shown_direction(metric: str, objective: str, study_direction: str, given: str | None) -> tuple[str, str]:
    """(direction, how it was chosen) of the metric a table shows: `given` (--direction), else the study's own for
    its objective, else inferred from the metric's name (ablate.stats.directions)."""
    if given is None and metric == objective:
        return study_direction, "the study's direction"
    return metric_direction(metric, given)


def study_table(studies: list[optuna.Study], runs_root: Path, *, metric=None, direction=None, at="last", **options):
    """The table of `studies` (merged; they must share an objective) on `metric` (default: their objective) in its
    own direction (`shown_direction`), at the `at` epoch of a metric other than the objective ("last" | "best"),
    latency from the runs' summary.json, their folders kept as `runs`. `options`: those of `finish`."""
    objectives = {s.study_name: study_objective(s) for s in studies}
    if len(set(objectives.values())) > 1:
        raise ConfigError(f"these studies optimize different metrics ({objectives}); give one --study at a time")
    objective, study_direction = next(iter(objectives.values()), ("val/mIoU", "maximize"))
    metric = metric or objective
    direction, how = shown_direction(metric, objective, study_direction, direction)
    rows = study_rows([t for s in studies for t in s.get_trials(deepcopy=False)], metric, objective, direction, at)
    runs = run_folders(runs_root, studies, rows)
    latency_from_runs(rows, runs)  # what the runs recorded as they ended
    stored = study_verdicts(studies[0]) if studies else {}
    table = finish(rows, metric, direction, how, stored, **options)
    table.runs = runs
    return table


def finish(
    rows: list[dict],
    metric: str,
    direction: str,
    how: str,
    stored: dict,
    *,
    baseline: dict | None = None,
    default_baseline: dict | None = None,
    margin=None,
    alpha=None,
    moderate=None,
    measure_latency: bool = False,
) -> Table:
    """Verdicts of `rows` against the baseline (`baseline`, which must match one row; else `default_baseline` or the
    study's own once it has a result, else the best row), latency measured again on this machine with
    `measure_latency`, and the note under the table."""
    v = verdict_options({**stored, "direction": direction}, margin, alpha, moderate)
    chosen = baseline or default_baseline or v["baseline"]
    if baseline is None and chosen and not any(has_settings(r, chosen) and r["mean"] is not None for r in rows):
        chosen = None  # the study's named baseline has no result yet: against the best row meanwhile
    base = None
    if any(r["mean"] is not None for r in rows):
        options = {"margin": v["margin"], "alpha": v["alpha"], "moderate": v["moderate"]}
        base = add_deltas(rows, chosen, direction=direction, metric=metric, **options)
    if measure_latency:
        measure_latencies(rows)
    note = verdict_note(v["alpha"], v["margin"], v["looks"], v["moderate"], unit=delta_unit(metric, values_of(rows)))
    table = Table(rows, metric, direction, v, base, f"{order_note(metric, direction, how)} {note}")
    table.effects = effects_of(rows, metric, v["alpha"])
    return table


def effects_of(rows: list[dict], metric: str, alpha: float) -> list[dict]:
    """The factorial effects of rows that vary two settings or more (one swept key: the table is its effect)."""
    if len(rows) <= 2 or len(varied_keys(rows)) <= 1:
        return []
    return factorial_effects(rows, 100 / delta_scale(metric, values_of(rows)), alpha=alpha)


def markdown(table: Table) -> str:
    """The table in Markdown under its conclusion in words: what `ablate.table --format md` prints and each sweep
    writes to runs/<study>/table.md."""
    words = conclusion(table, table.effects)
    head = f"**{words[0]}**\n\n" + "".join(f"{line}\n" for line in words[1:])
    text = render(table.rows, "md", table.metric, table.verdicts["alpha"], table.note, table.direction)
    return f"{head}\n{text}"


def has_settings(row: dict, chosen: dict) -> bool:
    """True when `row`'s variant sets every KEY=VALUE of `chosen`."""
    return chosen.items() <= settings(row["variant"]).items()
