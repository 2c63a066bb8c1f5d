"""Comparison tables from Optuna trials: one row per variant, mean ± sample std over seeds, best first."""
from __future__ import annotations

import statistics

import optuna
from optuna.trial import TrialState


def study_rows(trials: list[optuna.trial.FrozenTrial]) -> list[dict]:
    """Group finished trials by variant; complete seeds are averaged, incomplete variants are marked."""
    groups: dict[str, dict] = {}
    for t in trials:
        if "variant" not in t.user_attrs or t.state == TrialState.RUNNING:
            continue
        row = groups.setdefault(t.user_attrs["variant"], {"variant": t.user_attrs["variant"], "seeds": {},
                                                          "status": set(), "trials": []})
        row["trials"].append(t.number)
        row["status"].add({TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned"}.get(t.state, "failed"))
        if t.state == TrialState.COMPLETE:
            row["seeds"].update(zip(map(str, t.user_attrs["seeds"]), t.user_attrs["values"]))
        for key in ("params/neck", "params/total", "gflops"):
            if key in t.user_attrs:
                row[key] = t.user_attrs[key]
    rows = [_summarize(row) for row in groups.values()]
    return sorted(rows, key=lambda r: (r["mean"] is None, -(r["mean"] or 0)))


def _summarize(row: dict) -> dict:
    values = list(row["seeds"].values())
    row["n"] = len(values)
    row["mean"] = statistics.fmean(values) if values else None
    row["std"] = statistics.stdev(values) if len(values) > 1 else None
    row["status"] = "complete" if row["status"] == {"complete"} else "+".join(sorted(row["status"]))
    return row


def fmt_mean_std(row: dict) -> str:
    """'0.2712 ± 0.0123' (std over seeds, ddof=1), or the status when no seed completed."""
    if row["mean"] is None:
        return row.get("status", "-")
    std = "" if row["std"] is None else f" ± {row['std']:.4f}"
    return f"{row['mean']:.4f}{std}"


def to_markdown(rows: list[dict], metric: str = "val/mIoU") -> str:
    """A GitHub-markdown table of `rows`."""
    lines = [f"| variant | {metric} (mean ± std) | n | seeds | status | neck params | GFLOPs |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        seeds = ", ".join(f"{s}: {v:.4f}" for s, v in r["seeds"].items())
        lines.append(f"| {r['variant']} | {fmt_mean_std(r)} | {r['n']} | {seeds} | {r['status']} | "
                     f"{r.get('params/neck', '')} | {r.get('gflops', 0):.2f} |")
    return "\n".join(lines) + "\n"


def to_rich(rows: list[dict], title: str, metric: str = "val/mIoU"):
    """The same table for the terminal (rich)."""
    from rich.table import Table

    table = Table(title=title)
    for col in ("variant", f"{metric} mean ± std", "n", "status", "neck params", "GFLOPs"):
        table.add_column(col, justify="left" if col == "variant" else "right", overflow="fold")
    prefix = common_prefix([r["variant"] for r in rows])
    if prefix:
        table.caption = f"settings under {prefix}"
    for r in rows:
        variant = "\n".join(setting.removeprefix(prefix) for setting in r["variant"].split(" "))
        table.add_row(variant, fmt_mean_std(r), str(r["n"]), r["status"],
                      f"{r.get('params/neck', 0):,}", f"{r.get('gflops', 0):.2f}")
    return table


def common_prefix(variants: list[str]) -> str:
    """The dotted section every varied key shares ('model.neck.'), to print keys short."""
    keys = [setting.partition("=")[0] for v in variants for setting in v.split(" ")]
    parts = [k.split(".")[:-1] for k in keys]
    shared = []
    for level in zip(*parts) if parts else []:
        if len(set(level)) > 1:
            break
        shared.append(level[0])
    return "".join(f"{p}." for p in shared)


def main_effects(rows: list[dict]) -> list[dict]:
    """Per swept setting and value: the mean over every complete seed of every variant with that value.

    In a factorial grid this is the setting's main effect, averaged over all the other settings.
    """
    values: dict[tuple[str, str], list[float]] = {}
    for row in rows:
        for setting in row["variant"].split(" "):
            key, _, value = setting.partition("=")
            values.setdefault((key, value), []).extend(row["seeds"].values())
    effects = [{"setting": k, "value": v, "n": len(xs), "mean": statistics.fmean(xs) if xs else None,
                "std": statistics.stdev(xs) if len(xs) > 1 else None} for (k, v), xs in values.items()]
    return sorted(effects, key=lambda e: (e["setting"], -(e["mean"] or 0)))


def effects_to_rich(effects: list[dict], metric: str = "val/mIoU"):
    """Main effects for the terminal (rich)."""
    from rich.table import Table

    table = Table(title=f"main effects: {metric} averaged over the other settings")
    for col in ("setting", "value", "n runs", "mean ± std"):
        table.add_column(col, justify="left" if col in ("setting", "value") else "right", overflow="fold")
    for e in effects:
        table.add_row(e["setting"], e["value"], str(e["n"]), fmt_mean_std(e))
    return table
