"""`python -m ablate.table`: comparison tables from Optuna trials, one row per variant, best first.

mean ± sample std (ddof=1) over seeds, n, Δ vs a baseline row in points, a Welch t-test p-value,
neck and total parameters, GFLOPs, and forward latency measured on this machine.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

import optuna
from optuna.trial import TrialState
from rich.console import Console

from ablate.config import ConfigError
from ablate.render import FORMATS, render, settings

console = Console(stderr=True, highlight=False)


def seed_values(t: optuna.trial.FrozenTrial, metric: str) -> dict[str, float]:
    """{seed: value} of a complete trial: val/mIoU is each seed's best epoch (the objective), others the last."""
    if metric == "val/mIoU":
        return dict(zip(map(str, t.user_attrs["seeds"]), t.user_attrs["values"]))
    metrics = t.user_attrs.get("seed_metrics", [])
    if any(metric not in m for m in metrics) or not metrics:
        known = sorted({k for m in metrics for k in m} | {"val/mIoU"})
        raise ConfigError(f"--metric {metric!r} was not recorded for trial {t.number}; recorded: {', '.join(known)}")
    return {str(s): m[metric] for s, m in zip(t.user_attrs["seeds"], metrics)}


def study_rows(trials: list[optuna.trial.FrozenTrial], metric: str = "val/mIoU") -> list[dict]:
    """Group finished trials by variant; complete seeds are averaged, incomplete variants are marked."""
    groups: dict[str, dict] = {}
    for t in trials:
        if "variant" not in t.user_attrs or t.state in (TrialState.RUNNING, TrialState.WAITING):
            continue
        row = groups.setdefault(t.user_attrs["variant"], {"variant": t.user_attrs["variant"], "seeds": {},
                                                          "status": set(), "trials": []})
        row["trials"].append(t.number)
        row["status"].add({TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned"}.get(t.state, "failed"))
        if t.state == TrialState.COMPLETE:
            row["seeds"].update(seed_values(t, metric))
        for key in ("params/neck", "params/total", "gflops", "config", "classes"):
            if key in t.user_attrs:
                row[key] = t.user_attrs[key]
    rows = [_summarize(row) for row in groups.values()]
    return sorted(rows, key=lambda r: (r["mean"] is None, -(r["mean"] or 0)))


def wandb_rows(source: str, metric: str = "val/mIoU") -> list[dict]:
    """The same rows from W&B trial runs: a folder of offline runs (runs/wandb), or ENTITY/PROJECT online.

    One W&B run is one (trial, seed); its group is the variant. val/mIoU is the run's val/mIoU_best.
    """
    key = "val/mIoU_best" if metric == "val/mIoU" else metric
    groups: dict[str, dict] = {}
    for run in _wandb_runs(source):
        if run["job_type"] != "trial" or not run["group"]:
            continue
        row = groups.setdefault(run["group"], {"variant": run["group"], "seeds": {}, "status": set(), "trials": []})
        state = run["summary"].get("state")
        done = run.get("exit_code") == 0 and state is None and key in run["summary"]
        row["status"].add("complete" if done else "pruned" if state == "TrialPruned" else "failed")
        if done:
            row["seeds"][str(run["config"].get("seed"))] = run["summary"][key]
            row.update({k: run["summary"][k] for k in ("params/neck", "params/total", "gflops") if k in run["summary"]})
    rows = [_summarize(row) for row in groups.values()]
    return sorted(rows, key=lambda r: (r["mean"] is None, -(r["mean"] or 0)))


def _wandb_runs(source: str) -> list[dict]:
    from pathlib import Path

    from ablate.wandb_files import run_info

    folder = Path(source)
    if folder.is_dir():
        return [run_info(d) for d in sorted(folder.glob("offline-run-*")) if any(d.glob("run-*.wandb"))]
    if "/" not in source:
        raise ConfigError(f"--from-wandb {source!r} is neither a folder of offline runs nor ENTITY/PROJECT")
    import wandb

    return [{"job_type": r.job_type, "group": r.group, "config": dict(r.config), "summary": dict(r.summary),
             "exit_code": 0 if r.state == "finished" else 1} for r in wandb.Api().runs(source)]


def _summarize(row: dict) -> dict:
    values = list(row["seeds"].values())
    row["n"] = len(values)
    row["mean"] = statistics.fmean(values) if values else None
    row["std"] = statistics.stdev(values) if len(values) > 1 else None
    row["status"] = "complete" if row["status"] == {"complete"} else "+".join(sorted(row["status"]))
    return row


def add_deltas(rows: list[dict], baseline: dict[str, str] | None) -> dict:
    """Δ (points) and Welch's t-test p-value of every row against the baseline row (default: the best)."""
    from scipy.stats import ttest_ind

    candidates = [r for r in rows if baseline is None or baseline.items() <= settings(r["variant"]).items()]
    if baseline is not None and len(candidates) != 1:
        raise ConfigError(f"--baseline {baseline} matches {len(candidates)} rows, not one; rows: "
                          + "; ".join(r["variant"] for r in rows))
    if not candidates or candidates[0]["mean"] is None:
        raise ConfigError("the baseline row has no complete seed")
    base = candidates[0]
    for r in rows:
        r["baseline"] = r is base
        r["delta"] = None if r["mean"] is None else 100 * (r["mean"] - base["mean"])
        a, b = list(r["seeds"].values()), list(base["seeds"].values())
        r["p_value"] = None if r is base or len(a) < 2 or len(b) < 2 else float(ttest_ind(a, b, equal_var=False).pvalue)
    return base


def add_latency(rows: list[dict]) -> None:
    """Forward latency (ms, batch 1, median of 10 after warm-up) of each row's model on this machine."""
    import torch

    from ablate.config import from_dict
    from ablate.model import SegmentationModel, measure_latency_ms

    for r in rows:
        if "config" not in r:
            r["latency_ms"] = None
            continue
        m = from_dict(r["config"]).model
        torch.manual_seed(0)
        model = SegmentationModel(encoder=m.encoder, classes=r.get("classes", 1), neck=m.neck,
                                  encoder_depth=m.encoder_depth,
                                  output_stride=m.output_stride, head=m.head)
        r["latency_ms"] = measure_latency_ms(model, r["config"]["data"]["image_size"])


def main_effects(rows: list[dict]) -> list[dict]:
    """Per swept setting and value: the mean over every complete seed of every variant with that value.

    In a factorial grid this is the setting's main effect, averaged over all the other settings.
    """
    values: dict[tuple[str, str], list[float]] = {}
    for row in rows:
        for key, value in settings(row["variant"]).items():
            values.setdefault((key, value), []).extend(row["seeds"].values())
    from scipy.stats import ttest_ind

    effects = [{"setting": k, "value": v, "n": len(xs), "mean": statistics.fmean(xs) if xs else None,
                "std": statistics.stdev(xs) if len(xs) > 1 else None, "p_value": None}
               for (k, v), xs in values.items()]
    for key in {k for k, _ in values}:  # a two-level setting: Welch's t-test between its levels
        levels = [xs for (k, _), xs in values.items() if k == key]
        if len(levels) == 2 and all(len(xs) > 1 for xs in levels):
            p = float(ttest_ind(*levels, equal_var=False).pvalue)
            for e in effects:
                e["p_value"] = p if e["setting"] == key else e["p_value"]
    return sorted(effects, key=lambda e: (e["setting"], -(e["mean"] or 0)))


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


def main(argv: list[str] | None = None) -> int:
    """Command line: read the studies, print or write the table."""
    from ablate.sweep import DEFAULT_STORAGE

    p = argparse.ArgumentParser(prog="python -m ablate.table", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--study", action="append", help="study name (repeat to merge studies; default: all)")
    p.add_argument("--storage", help=f"Optuna RDB URL (default: $ABLATE_STORAGE, else {DEFAULT_STORAGE})")
    p.add_argument("--format", choices=FORMATS, default="md")
    p.add_argument("--baseline", help="KEY=VALUE,... picking the row Δ is measured against (default: the best)")
    p.add_argument("--metric", default="val/mIoU", help="val/mIoU (each seed's best epoch) or another val/ metric")
    p.add_argument("--no-latency", action="store_true", help="skip measuring forward latency")
    p.add_argument("--from-wandb", metavar="PATH_OR_PROJECT",
                   help="build the table from W&B runs instead: runs/wandb (offline folders) or ENTITY/PROJECT")
    p.add_argument("--out", help="write to this file instead of stdout")
    args = p.parse_args(argv)
    try:
        rows = wandb_rows(args.from_wandb, args.metric) if args.from_wandb else _storage_rows(args)
        if not rows:
            raise ConfigError(f"no finished trials in {args.from_wandb or ', '.join(args.study or ['this storage'])}")
        add_deltas(rows, parse_baseline(args.baseline))
        if not args.no_latency:
            add_latency(rows)
    except ConfigError as e:
        console.print(f"[red]error:[/] {e}")
        return 2
    text = render(rows, args.format, args.metric)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


def _storage_rows(args) -> list[dict]:
    from ablate.sweep import DEFAULT_STORAGE, make_storage

    storage = make_storage(args.storage or os.environ.get("ABLATE_STORAGE") or DEFAULT_STORAGE)
    names = args.study or [s.study_name for s in optuna.get_all_study_summaries(storage)]
    return study_rows([t for name in names for t in load_study(name, storage).get_trials(deepcopy=False)], args.metric)


def load_study(name: str, storage) -> optuna.Study:
    """The stored study `name`; an unknown name is a ConfigError listing the studies there."""
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        known = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        raise ConfigError(f"no study {name!r} in this storage; studies: {', '.join(known) or 'none'}") from None


if __name__ == "__main__":
    sys.exit(main())
