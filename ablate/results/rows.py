"""A study's rows, one per variant: seeds' values, mean ± std, verdicts vs a baseline row, latency."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import optuna
from optuna.trial import TrialState

from ablate.errors import ConfigError
from ablate.results.directions import delta_scale, values_of
from ablate.results.formats import settings
from ablate.study.folders import readable


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
    return best_first([_summarize(row) for row in groups.values()], direction)


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


def wandb_rows(source: str, metric: str = "val/mIoU", direction: str = "maximize") -> list[dict]:
    """The same rows from W&B trial runs: a folder of offline runs (runs/wandb), or ENTITY/PROJECT online.

    One W&B run is one (trial, seed); its group is the variant. A study's objective (val/mIoU, or a LightningCLI
    study's metric) is the run's `<metric>_best`, any other metric its last epoch.
    """
    groups: dict[str, dict] = {}
    for run in _wandb_runs(source):
        if run["job_type"] != "trial" or not run["group"]:
            continue
        row = groups.setdefault(run["group"], new_row(run["group"], {}))
        state, key = run["summary"].get("state"), _best_key(run["summary"], metric)
        done = run.get("exit_code") == 0 and state is None and key in run["summary"]
        row["status"].add("complete" if done else "pruned" if state == "TrialPruned" else "failed")
        if done:
            seed = run["summary"].get("seed", run["config"].get("seed"))  # a module's hparams may hold a `seed`
            row["seeds"][str(seed)] = run["summary"][key]
            row.update({k: run["summary"][k] for k in ("params/neck", "params/total", "gflops") if k in run["summary"]})
            if "latency_ms" in run["summary"]:  # the least over the seeds, as from run folders
                row["latency_ms"] = min(row.get("latency_ms", math.inf), run["summary"]["latency_ms"])
    return best_first([_summarize(row) for row in groups.values()], direction)


def _best_key(summary: dict, metric: str) -> str:
    return f"{metric}_best" if f"{metric}_best" in summary else metric


def _wandb_runs(source: str) -> list[dict]:
    from pathlib import Path

    from ablate.results.wandb_files import run_info

    folder = Path(source)
    if folder.is_dir():
        return [run_info(d) for d in sorted(folder.glob("offline-run-*")) if any(d.glob("run-*.wandb"))]
    if "/" not in source:
        raise ConfigError(f"--from-wandb {source!r} is neither a folder of offline runs nor ENTITY/PROJECT")
    import wandb

    return [
        {
            "job_type": r.job_type,
            "group": r.group,
            "config": dict(r.config),
            "summary": dict(r.summary),
            "exit_code": 0 if r.state == "finished" else 1,
        }
        for r in wandb.Api().runs(source)
    ]


def _summarize(row: dict) -> dict:
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
    """Every row compared with the baseline row (default: the best) over seeds, by ablate.results.stats.annotate:
    Δ (points for a fraction such as mIoU, else `metric`'s own units) with its interval, paired or Welch t
    (moderated across rows with `moderate`), Holm-adjusted p, TOST with `margin`, verdict, seeds needed."""
    from ablate.results.stats import annotate

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


def is_run_config(config) -> bool:
    """True for ablate's own run config (a built-in study's trial), False for a LightningCLI project's config."""
    return isinstance(config, dict) and "optim" in config and "neck" in (config.get("model") or {})


def run_folders(runs_root: Path, studies: list[optuna.Study], rows: list[dict]) -> dict[str, list[dict]]:
    """Each row's run folders (`runs_root/<study>/t<trial>-s<seed>/`, of any of `studies`) that hold a
    summary.json, lowest seed first: {variant: [{name, folder, summary}]}. Everything a run left (per-class IoU,
    receptive fields, latency, images) is read from here, whichever target ran it; a folder whose study.json names
    another study of the same name is left out, with one warning (ablate.study.folders)."""
    out: dict[str, list[dict]] = {r["variant"]: [] for r in rows}
    for study in studies:
        if not readable(runs_root / study.study_name, study):  # another study's of the same name: left out
            continue
        for t in study.get_trials(deepcopy=False):
            if t.user_attrs.get("variant") not in out:
                continue
            for folder in sorted((runs_root / study.study_name).glob(f"t{t.number}-s*")):
                if (folder / "summary.json").is_file():
                    summary = json.loads((folder / "summary.json").read_text())
                    out[t.user_attrs["variant"]].append({"name": folder.name, "folder": folder, "summary": summary})
    return {v: sorted(found, key=lambda r: r["summary"].get("seed", 0)) for v, found in out.items()}


def latency_from_runs(rows: list[dict], runs: dict[str, list[dict]]) -> None:
    """Each row's latency_ms: the least of its runs' summary.json values (measured as each run ended; other work
    on the machine only ever slows a measurement down, so the least is the closest to the model's own cost)."""
    for r in rows:
        values = [run["summary"]["latency_ms"] for run in runs.get(r["variant"], []) if "latency_ms" in run["summary"]]
        r["latency_ms"] = min(values) if values else None


def measure_latencies(rows: list[dict]) -> None:
    """Forward latency (ms, batch 1, median of 10 after warm-up) of each row's model on this machine, for rows of
    ablate's own model; any other row keeps the latency its runs recorded (or None)."""
    import torch

    from ablate.callbacks.efficiency import measure_latency_ms
    from ablate.config import from_dict
    from ablate.run.model import SegmentationModel

    for r in rows:
        if not is_run_config(r.get("config")):  # none, or a LightningCLI project's: its model is not ours to build
            r.setdefault("latency_ms", None)
            continue
        m = from_dict(r["config"]).model
        torch.manual_seed(0)
        model = SegmentationModel(
            encoder=m.encoder,
            classes=r.get("classes", 1),
            neck=m.neck,
            encoder_depth=m.encoder_depth,
            output_stride=m.output_stride,
            head=m.head,
        )
        r["latency_ms"] = measure_latency_ms(model, r["config"]["data"]["image_size"])


def verdict_options(
    stored: dict, margin: float | None = None, alpha: float | None = None, moderate: bool | None = None
) -> dict:
    """margin, alpha, looks, moderate, direction for a table: the flags (--margin, --alpha, --no-moderation) over
    what a study recorded (`study_verdicts`); a margin that is not positive or an α outside (0, 0.5) is a
    ConfigError. --no-moderation on a study that added seeds until decided: the plain t's α per look."""
    from ablate.results.stats import check_margin

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
