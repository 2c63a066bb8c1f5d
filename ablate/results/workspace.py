"""A study's W&B workspace (wandb-workspaces): its runs grouped by variant, curves, parallel coordinates, media."""

from __future__ import annotations

import json
import os

import optuna

from ablate.cli import error
from ablate.errors import ConfigError
from ablate.study.columns import config_column, swept_keys
from ablate.study.variants import study_objective


def study_facts(study: optuna.Study) -> dict:
    """What the workspace needs from a stored study: swept keys, config columns, class names, W&B target."""
    if "space" not in study.user_attrs:
        raise ConfigError(f"study {study.study_name!r} was not made by `python -m ablate.sweep` (it has no space)")
    stored = json.loads(study.user_attrs["space"])
    keys = swept_keys(stored["space"], stored.get("rows"))
    classes = sorted(
        {
            k.removeprefix("val/IoU/")
            for t in study.get_trials(deepcopy=False)
            for m in t.user_attrs.get("seed_metrics", [])
            for k in m
            if k.startswith("val/IoU/")
        }
    )
    sweep = study.user_attrs.get("sweep", {})
    # a LightningCLI study's runs went to $WANDB_ENTITY / $WANDB_PROJECT (default ablate), as they do here
    env = {"entity": os.environ.get("WANDB_ENTITY"), "project": os.environ.get("WANDB_PROJECT") or "ablate"}
    wandb_cfg = env if sweep.get("cli") else (sweep.get("base") or {}).get("wandb", {})
    return {
        "study": study.study_name,
        "metric": study_objective(study)[0],
        "keys": keys,
        "columns": list(dict.fromkeys(map(config_column, keys))),
        "classes": classes,
        "entity": wandb_cfg.get("entity"),
        "project": wandb_cfg.get("project"),
    }


def variant_panels(facts: dict) -> list:
    """Bar chart of the best metric per variant, its curve, parallel coordinates, metric vs params and latency."""
    import wandb_workspaces.reports.v2 as wr

    metric = facts.get("metric", "val/mIoU")  # val/mIoU, or a LightningCLI study's own metric
    best = wr.SummaryMetric(f"{metric}_best")
    grouped = {"groupby_aggfunc": "mean", "groupby_rangefunc": "stddev"}  # over the seeds of a variant
    columns = [wr.ParallelCoordinatesPlotColumn(metric=wr.Config(c), display_name=c) for c in facts["columns"]]
    return [
        wr.BarPlot(title=f"best {metric} per variant (mean ± std over seeds)", metrics=[best], **grouped),
        wr.LinePlot(title=f"{metric} per epoch (mean ± std over seeds)", x="epoch", y=[metric], **grouped),
        wr.ParallelCoordinatesPlot(
            title=f"swept settings -> best {metric}", columns=[*columns, wr.ParallelCoordinatesPlotColumn(metric=best)]
        ),
        wr.ScatterPlot(title=f"best {metric} vs neck parameters", x=wr.SummaryMetric("params/neck"), y=best),
        wr.ScatterPlot(title=f"best {metric} vs latency (ms, batch 1)", x=wr.SummaryMetric("latency_ms"), y=best),
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

    best = [
        wr.MediaBrowser(
            title="validation images at the best epoch (true and predicted masks)",
            media_keys=["val/predictions"],
            gallery_axis="run",
        ),
        wr.MediaBrowser(
            title="effective receptive field of the final model", media_keys=["val/erf"], gallery_axis="run"
        ),
    ]
    sections = [
        ws.Section(name="Variants", panels=variant_panels(facts), is_open=True),
        ws.Section(name="Per-class IoU", panels=class_panels(facts), is_open=True),
        ws.Section(name="Best epoch", panels=best, is_open=True),
    ]
    runs = ws.RunsetSettings(filters=ws.And(ws.Tags("tags").isin([facts["study"]])), groupby=[ws.Metric("Group")])
    return ws.Workspace(
        entity=entity,
        project=project,
        name=name or f"ablate: {facts['study']}",
        sections=sections,
        settings=ws.WorkspaceSettings(x_axis="epoch", max_runs=1000),
        runset_settings=runs,
    )


def workspace_spec(workspace) -> dict:
    """The view (entity, project, name and the viewspec JSON) that `workspace.save()` would upload."""
    return workspace._to_model().model_dump(mode="json", by_alias=True, exclude_none=True)


def save(workspace) -> int:
    """Upload the workspace (needs `wandb login` or WANDB_API_KEY, and the network); print its URL."""
    try:
        workspace.save()
    except Exception as e:  # no key, no network, no such entity: say so and how to look offline
        return error(
            f"could not save the workspace to W&B {workspace.entity}/{workspace.project}: "
            f"{type(e).__name__}: {e}\nlog in with `wandb login` (or set WANDB_API_KEY), or print the spec "
            "with --dry-run",
            exit_code=1,
        )
    print(workspace.url)
    return 0
