"""What a study's runs left: their folders (summary.json) and latency, and a study's rows read from W&B runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import optuna

from ablate.errors import ConfigError
from ablate.study.folders import readable
from ablate.study.variants import best_first, new_row, summarize


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
    return best_first([summarize(row) for row in groups.values()], direction)


def _best_key(summary: dict, metric: str) -> str:
    return f"{metric}_best" if f"{metric}_best" in summary else metric


def _wandb_runs(source: str) -> list[dict]:
    from pathlib import Path

    from ablate.study.wandb_files import run_info

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
