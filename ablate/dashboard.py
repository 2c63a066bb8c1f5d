"""`python -m ablate.dashboard --study NAME`: a W&B workspace for a study's variants (wandb-workspaces), or its spec."""
from __future__ import annotations

import argparse
import json
import os
import sys

import optuna
from rich.console import Console

from ablate.config import ConfigError
from ablate.visuals import config_column, swept_keys

console = Console(stderr=True, highlight=False)
MIOU = "val/mIoU_best"


def study_facts(study: optuna.Study) -> dict:
    """What the workspace needs from a stored study: swept keys, config columns, class names, W&B target."""
    if "space" not in study.user_attrs:
        raise ConfigError(f"study {study.study_name!r} was not made by `python -m ablate.sweep` (it has no space)")
    stored = json.loads(study.user_attrs["space"])
    keys = swept_keys(stored["space"], stored.get("rows"))
    classes = sorted({k.removeprefix("val/IoU/") for t in study.get_trials(deepcopy=False)
                      for m in t.user_attrs.get("seed_metrics", []) for k in m if k.startswith("val/IoU/")})
    wandb_cfg = study.user_attrs.get("sweep", {}).get("base", {}).get("wandb", {})
    return {"study": study.study_name, "keys": keys, "columns": list(dict.fromkeys(map(config_column, keys))),
            "classes": classes, "entity": wandb_cfg.get("entity"), "project": wandb_cfg.get("project")}


def variant_panels(facts: dict) -> list:
    """Bar chart of best mIoU per variant, the mIoU curve, parallel coordinates, mIoU vs params and latency."""
    import wandb_workspaces.reports.v2 as wr

    grouped = {"groupby_aggfunc": "mean", "groupby_rangefunc": "stddev"}  # over the seeds of a variant
    columns = [wr.ParallelCoordinatesPlotColumn(metric=wr.Config(c), display_name=c) for c in facts["columns"]]
    return [
        wr.BarPlot(title="best val/mIoU per variant (mean ± std over seeds)", metrics=[wr.SummaryMetric(MIOU)],
                   **grouped),
        wr.LinePlot(title="val/mIoU per epoch (mean ± std over seeds)", x="epoch", y=["val/mIoU"], **grouped),
        wr.ParallelCoordinatesPlot(title="swept settings -> best val/mIoU",
                                   columns=[*columns, wr.ParallelCoordinatesPlotColumn(metric=wr.SummaryMetric(MIOU))]),
        wr.ScatterPlot(title="best val/mIoU vs neck parameters", x=wr.SummaryMetric("params/neck"),
                       y=wr.SummaryMetric(MIOU)),
        wr.ScatterPlot(title="best val/mIoU vs latency (ms, batch 1)", x=wr.SummaryMetric("latency_ms"),
                       y=wr.SummaryMetric(MIOU)),
    ]


def class_panels(facts: dict) -> list:
    """One val/IoU curve per class (mean ± std over seeds); a regex panel while no trial has finished."""
    import wandb_workspaces.reports.v2 as wr

    grouped = {"x": "epoch", "groupby_aggfunc": "mean", "groupby_rangefunc": "stddev"}
    if not facts["classes"]:
        return [wr.LinePlot(title="val/IoU per class", metric_regex="val/IoU/.*", **grouped)]
    return [wr.LinePlot(title=f"val/IoU/{c}", y=[f"val/IoU/{c}"], **grouped) for c in facts["classes"]]


def build_workspace(facts: dict, entity: str, project: str, name: str | None = None):
    """The workspace: the study's trial runs (tagged with its name) grouped by variant, three sections."""
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws

    best = [wr.MediaBrowser(title="validation images at the best epoch (true and predicted masks)",
                            media_keys=["val/predictions"], gallery_axis="run"),
            wr.MediaBrowser(title="effective receptive field of the final model", media_keys=["val/erf"],
                            gallery_axis="run")]
    sections = [ws.Section(name="Variants", panels=variant_panels(facts), is_open=True),
                ws.Section(name="Per-class IoU", panels=class_panels(facts), is_open=True),
                ws.Section(name="Best epoch", panels=best, is_open=True)]
    runs = ws.RunsetSettings(filters=ws.And(ws.Tags("tags").isin([facts["study"]])), groupby=[ws.Metric("Group")])
    return ws.Workspace(entity=entity, project=project, name=name or f"ablate: {facts['study']}", sections=sections,
                        settings=ws.WorkspaceSettings(x_axis="epoch", max_runs=1000), runset_settings=runs)


def workspace_spec(workspace) -> dict:
    """The view (entity, project, name and the viewspec JSON) that `workspace.save()` would upload."""
    return workspace._to_model().model_dump(mode="json", by_alias=True, exclude_none=True)


def main(argv: list[str] | None = None) -> int:
    """Command line: read the study, build the workspace, print its spec (--dry-run) or save it and print the URL."""
    from ablate.sweep import DEFAULT_STORAGE, make_storage, redact
    from ablate.table import load_study

    p = argparse.ArgumentParser(prog="python -m ablate.dashboard", description=__doc__)
    p.add_argument("--study", required=True, help="the study's name (as in python -m ablate.sweep --study)")
    p.add_argument("--storage", help=f"Optuna RDB URL (default: $ABLATE_STORAGE, else {DEFAULT_STORAGE})")
    p.add_argument("--entity", help="W&B entity (default: the study's wandb.entity)")
    p.add_argument("--project", help="W&B project (default: the study's wandb.project)")
    p.add_argument("--name", help="workspace name (default: 'ablate: STUDY')")
    p.add_argument("--dry-run", action="store_true", help="print the workspace spec as JSON; no network, no API key")
    args = p.parse_args(argv)
    storage_url = args.storage or os.environ.get("ABLATE_STORAGE") or DEFAULT_STORAGE
    try:
        facts = study_facts(load_study(args.study, make_storage(storage_url)))
        entity, project = args.entity or facts["entity"], args.project or facts["project"]
        if not entity or not project:
            raise ConfigError(f"the W&B {'entity' if not entity else 'project'} is not known: give --entity E "
                              "--project P (the study's config has wandb.entity/project unset)")
        workspace = build_workspace(facts, entity, project, args.name)
    except ConfigError as e:
        console.print(f"[red]error:[/] {e} (storage {redact(storage_url)})")
        return 2
    if args.dry_run:
        print(json.dumps(workspace_spec(workspace), indent=1))
        return 0
    return save(workspace)


def save(workspace) -> int:
    """Upload the workspace (needs `wandb login` or WANDB_API_KEY, and the network); print its URL."""
    try:
        workspace.save()
    except Exception as e:  # no key, no network, no such entity: say so and how to look offline
        console.print(f"[red]error:[/] could not save the workspace to W&B {workspace.entity}/{workspace.project}: "
                      f"{type(e).__name__}: {e}\nlog in with `wandb login` (or set WANDB_API_KEY), or print the spec "
                      "with --dry-run")
        return 1
    print(workspace.url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
