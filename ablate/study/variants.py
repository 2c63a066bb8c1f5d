"""A study's variants as rows: each variant's seeds and values, mean ± std, verdicts against a baseline row."""

from __future__ import annotations

import math
import statistics
from typing import TYPE_CHECKING

from ablate.errors import ConfigError
from ablate.stats.directions import delta_scale, values_of

if TYPE_CHECKING:  # optuna is imported where trials are read: the tables' formats import this module cheaply
    import optuna


def study_objective(study: optuna.Study) -> tuple[str, str]:
    """(metric, direction) a study optimizes: its sweep's `metric` (val/mIoU for built-in studies)."""
    return study.user_attrs.get("sweep", {}).get("metric", "val/mIoU"), study.direction.name.lower()


def seed_values(t: optuna.trial.FrozenTrial, metric: str, objective: str = "val/mIoU", at: str = "last") -> dict:
    """{seed: value} of a complete trial: the objective is each seed's best epoch; any other number its runs
    recorded (each metric logged, params, GFLOPs, ...) is its last epoch's, or with `at="best"` its value at the
    epoch of the best objective."""
    if metric == objective:
        return dict(zip(map(str, t.user_attrs["seeds"]), t.user_attrs["values"]))
    metrics = t.user_attrs.get("seed_metrics_best" if at == "best" else "seed_metrics", [])
    if any(metric not in m for m in metrics) or not metrics:
        known = sorted({k for m in metrics for k in m} | {objective})
        where = " at the best epoch" if at == "best" else ""
        raise ConfigError(
            f"--metric {metric!r} was not recorded{where} for trial {t.number}; recorded: {', '.join(known)}"
        )
    return {str(s): m[metric] for s, m in zip(t.user_attrs["seeds"], metrics)}


def study_rows(
    trials: list[optuna.trial.FrozenTrial],
    metric: str | None = None,
    objective: str = "val/mIoU",
    direction: str = "maximize",
    at: str = "last",
) -> list[dict]:
    """Group finished trials by variant, best first (by `direction`, the direction of the metric shown); complete
    seeds are averaged, incomplete variants are marked. `metric` None: the trials' `objective` (each seed's best
    epoch); another recorded number: at its last epoch, or at the objective's best epoch with `at="best"`."""
    from optuna.trial import TrialState

    metric, groups = metric or objective, {}
    for t in trials:
        if "variant" not in t.user_attrs or t.state in (TrialState.RUNNING, TrialState.WAITING):
            continue
        row = groups.setdefault(t.user_attrs["variant"], new_row(t.user_attrs["variant"], t.params))
        row["trials"].append(t.number)
        row["status"].add({TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned"}.get(t.state, "failed"))
        if t.state == TrialState.COMPLETE:  # a seed completed twice (never by ablate: ablate.study.check) counts once
            for seed, value in seed_values(t, metric, objective, at).items():
                row["seeds"].setdefault(seed, value)
        for key in ("params/neck", "params/total", "gflops", "config", "classes"):
            if key in t.user_attrs:
                row[key] = t.user_attrs[key]
    return best_first([summarize(row) for row in groups.values()], direction)


def new_row(variant: str, params: dict) -> dict:
    """An empty row of `variant`; `settings` its varied values typed as the space declares them (an int choice
    stays an int), read from the trial's params where they hold the key, else the label's text."""
    typed = {k: params.get(k, v) for k, v in settings(variant).items()}
    return {"variant": variant, "settings": typed, "seeds": {}, "status": set(), "trials": []}


def best_first(rows: list[dict], direction: str) -> list[dict]:
    """`rows` ordered best mean first by `direction`; rows without a mean last."""
    sign = -1 if direction == "maximize" else 1
    return sorted(rows, key=lambda r: (r["mean"] is None, sign * (r["mean"] or 0)))


def rows_of(study: optuna.Study) -> list[dict]:
    """`study_rows` of one stored study, on its own objective."""
    return study_rows(study.get_trials(deepcopy=False), None, *study_objective(study))


def summarize(row: dict) -> dict:
    """n, mean, std (ddof=1) and status of a row from its seeds; a seed whose value is not a finite number (a metric
    a run logged as NaN) is left out of them and dropped from the row, and the status says how many."""
    bad = [s for s, v in row["seeds"].items() if not isinstance(v, (int, float)) or not math.isfinite(v)]
    for s in bad:
        del row["seeds"][s]
    values = list(row["seeds"].values())
    row["n"] = len(values)
    row["mean"] = statistics.fmean(values) if values else None
    row["std"] = statistics.stdev(values) if len(values) > 1 else None
    row["status"] = "complete" if row["status"] == {"complete"} else "+".join(sorted(row["status"]))
    if bad:
        row["status"] += f", {len(bad)} seed(s) not finite"
    return row


def add_deltas(
    rows: list[dict],
    baseline: dict[str, str] | None,
    *,
    margin: float | None = None,
    alpha: float = 0.05,
    direction: str = "maximize",
    moderate: bool = True,
    metric: str = "val/mIoU",
) -> dict:
    """Every row compared with the baseline row (default: the best) over seeds, by ablate.stats.verdicts.annotate:
    Δ (points for a fraction such as mIoU, else `metric`'s own units) with its interval, paired or Welch t
    (moderated across rows with `moderate`), Holm-adjusted p, TOST with `margin`, verdict, seeds needed."""
    from ablate.stats.verdicts import annotate

    candidates = [r for r in rows if baseline is None or baseline.items() <= settings(r["variant"]).items()]
    if baseline is not None and len(candidates) != 1:
        raise ConfigError(
            f"--baseline {baseline} matches {len(candidates)} rows, not one; rows: "
            + "; ".join(r["variant"] for r in rows)
        )
    if not candidates or candidates[0]["mean"] is None:
        raise ConfigError("the baseline row has no complete seed")
    base = candidates[0]
    scale = delta_scale(metric, values_of(rows))
    annotate(rows, base, margin=margin, alpha=alpha, direction=direction, moderate=moderate, scale=scale)
    for r in rows:
        r["baseline"] = r is base
    return base


def verdict_options(
    stored: dict, margin: float | None = None, alpha: float | None = None, moderate: bool | None = None
) -> dict:
    """margin, alpha, looks, moderate, direction for a table: the flags (--margin, --alpha, --no-moderation) over
    what a study recorded (`study_verdicts`); a margin that is not positive or an α outside (0, 0.5) is a
    ConfigError. --no-moderation on a study that added seeds until decided: the plain t's α per look."""
    from ablate.stats.verdicts import check_margin

    out = {"margin": None, "alpha": 0.05, "looks": None, "direction": "maximize", "baseline": None, "moderate": True}
    out.update(stored)
    if margin is not None:
        out["margin"] = margin
    if moderate is not None and moderate != out["moderate"]:
        out["moderate"] = moderate
        out["alpha"] = out.pop("alpha_plain", None) or out["alpha"]
    if alpha is not None:
        out.update(alpha=alpha, looks=None)
    try:
        check_margin(out["margin"])
    except ValueError as e:
        raise ConfigError(f"--margin: {e}") from None
    if not 0 < out["alpha"] < 0.5:
        raise ConfigError(f"--alpha must be between 0 and 0.5, e.g. 0.05; got {out['alpha']!r}")
    return out


def study_verdicts(study: optuna.Study) -> dict:
    """What the study's tables decide with, as its sweep recorded it (ablate.study.decide.verdict_attrs): margin,
    alpha (the α per look once the study added seeds until decided), looks ([first, max_seeds] or None) and the
    baseline row's settings (an experiment's `baseline`; None: the best row), moderate (the moderated t across rows;
    studies from before it: True), alpha_plain (the plain t's α per look, for --no-moderation) and race_alpha (the α
    per look of a race's eliminations, ablate.study.race; races from before it: alpha)."""
    v = study.user_attrs.get("verdicts") or {}
    return {
        "margin": v.get("margin"),
        "alpha": v.get("look_alpha") or v.get("alpha", 0.05),
        "nominal_alpha": v.get("alpha", 0.05),  # the study's α, which the α per look spreads over its looks
        "alpha_plain": v.get("look_alpha_plain") or v.get("look_alpha") or v.get("alpha", 0.05),
        "moderate": v.get("moderate", True),
        "looks": v.get("looks"),
        "baseline": v.get("baseline"),
        "race_alpha": v.get("race_alpha") or v.get("look_alpha") or v.get("alpha", 0.05),
    }


def parse_baseline(text: str | None) -> dict[str, str] | None:
    """'model.neck.norm=bn,model.neck.fusion=concat' -> {key: value}; rates values keep their commas."""
    if not text:
        return None
    out, key = {}, None
    for part in text.split(","):
        if "=" in part:
            key, _, value = part.partition("=")
            out[key] = value
        elif key is not None:  # a comma inside a value such as rates=2,4,6
            out[key] += "," + part
        else:
            raise ConfigError(f"--baseline {text!r} must be KEY=VALUE[,KEY=VALUE...]")
    return out


def settings(variant: str) -> dict[str, str]:
    """'a=1 b=x' -> {'a': '1', 'b': 'x'}."""
    return dict(s.partition("=")[::2] for s in variant.split(" ") if s)


def common_prefix(variants: list[str]) -> str:
    """The dotted section every varied key shares ('model.neck.'), to print keys short."""
    parts = [k.split(".")[:-1] for v in variants for k in settings(v)]
    shared = []
    for level in zip(*parts) if parts else []:
        if len(set(level)) > 1:
            break
        shared.append(level[0])
    return "".join(f"{p}." for p in shared)


def short_labels(rows: list[dict]) -> dict[str, str]:
    """Variant -> its settings without the section every key shares ('model.neck.')."""
    prefix = common_prefix([r["variant"] for r in rows])
    return {r["variant"]: " ".join(s.removeprefix(prefix) for s in r["variant"].split(" ")) or "base" for r in rows}
