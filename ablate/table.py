"""`python -m ablate.table`: comparison tables from Optuna trials, one row per variant, best first.

mean ± sample std (ddof=1) over seeds, n, Δ vs a baseline row in points, a Welch t-test p-value,
neck and total parameters, GFLOPs, and forward latency measured on this machine.
"""
from __future__ import annotations

import argparse
import csv
import html
import io
import json
import os
import statistics
import sys

import optuna
from optuna.trial import TrialState
from rich.console import Console

from ablate.config import ConfigError

console = Console(stderr=True, highlight=False)
FORMATS = ("md", "latex", "csv", "json", "html")
COLUMNS = ("variant", "n", "mean", "std", "delta", "p_value", "params/neck", "params/total", "gflops",
           "latency_ms", "status", "seeds")


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


def settings(variant: str) -> dict[str, str]:
    """'a=1 b=x' -> {'a': '1', 'b': 'x'}."""
    return dict(s.partition("=")[::2] for s in variant.split(" ") if s)


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


def fmt_mean_std(row: dict, scale: float = 1.0) -> str:
    """'0.2712 ± 0.0123' (std over seeds, ddof=1), or the status when no seed completed."""
    if row["mean"] is None:
        return row.get("status", "-")
    std = "" if row["std"] is None else f" ± {row['std'] * scale:.4f}"
    return f"{row['mean'] * scale:.4f}{std}"


def fmt_delta(row: dict) -> str:
    """'+1.23 **' (points; * p < 0.05, ** p < 0.01, Welch), 'baseline', or '' when there is no mean."""
    if row.get("baseline"):
        return "baseline"
    if row.get("delta") is None:
        return ""
    p = row.get("p_value")
    mark = "" if p is None else "**" if p < 0.01 else "*" if p < 0.05 else ""
    return f"{row['delta']:+.2f}{' ' + mark if mark else ''}"


def _cells(r: dict, keys: list[str], metric: str) -> list[str]:
    s = settings(r["variant"])
    p = "" if r.get("p_value") is None else f"{r['p_value']:.3g}"
    lat = "" if r.get("latency_ms") is None else f"{r['latency_ms']:.1f}"
    return [*(s.get(k, "") for k in keys), fmt_mean_std(r), str(r["n"]), fmt_delta(r), p,
            f"{r.get('params/neck', 0):,}", f"{r.get('params/total', 0):,}", f"{r.get('gflops', 0):.2f}", lat,
            r["status"]]


def _header(keys: list[str], metric: str) -> list[str]:
    return [*keys, f"{metric} (mean ± std)", "n", "Δ (points)", "p (Welch)", "neck params", "total params",
            "GFLOPs", "latency (ms)", "status"]


def varied_keys(rows: list[dict]) -> list[str]:
    """The dotted keys that appear in any row's variant, in first-seen order."""
    keys: dict[str, None] = {}
    for r in rows:
        keys.update(dict.fromkeys(settings(r["variant"])))
    return list(keys)


def render(rows: list[dict], fmt: str, metric: str = "val/mIoU") -> str:
    """The table as md, latex (booktabs tabular), csv, json (list of rows) or html."""
    keys = varied_keys(rows)
    if fmt == "json":
        return json.dumps([{**{k: r.get(k) for k in COLUMNS}, **settings(r["variant"])} for r in rows], indent=2)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow([*keys, *COLUMNS])
        for r in rows:
            s = settings(r["variant"])
            writer.writerow([*(s.get(k, "") for k in keys),
                             *(json.dumps(r["seeds"]) if c == "seeds" else r.get(c) for c in COLUMNS)])
        return out.getvalue()
    header, body = _header(keys, metric), [_cells(r, keys, metric) for r in rows]
    if fmt == "md":
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(c) + " |" for c in body]) + "\n"
    if fmt == "latex":
        return _latex(header, body)
    cells = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>\n" for row in body)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{cells}</tbody>\n</table>\n"


def _latex(header: list[str], body: list[list[str]]) -> str:
    def esc(text: str) -> str:
        for a, b in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&"), ("#", r"\#"),
                     ("±", r"$\pm$"), ("Δ", r"$\Delta$")):
            text = text.replace(a, b)
        return text

    lines = [r"\begin{tabular}{" + "l" * (len(header) - 9) + "r" * 8 + "l}", r"\toprule",
             " & ".join(map(esc, header)) + r" \\", r"\midrule"]
    lines += [" & ".join(map(esc, row)) + r" \\" for row in body]
    return "\n".join(lines + [r"\bottomrule", r"\end{tabular}"]) + "\n"


def common_prefix(variants: list[str]) -> str:
    """The dotted section every varied key shares ('model.neck.'), to print keys short."""
    parts = [k.split(".")[:-1] for v in variants for k in settings(v)]
    shared = []
    for level in zip(*parts) if parts else []:
        if len(set(level)) > 1:
            break
        shared.append(level[0])
    return "".join(f"{p}." for p in shared)


def to_rich(rows: list[dict], title: str, metric: str = "val/mIoU"):
    """The table for the terminal: one setting per line, under their shared section."""
    from rich.table import Table

    prefix = common_prefix([r["variant"] for r in rows])
    table = Table(title=title, caption=f"settings under {prefix}" if prefix else None)
    for col in ("variant", f"{metric} mean ± std", "n", "Δ", "status", "neck params", "GFLOPs"):
        table.add_column(col, justify="left" if col == "variant" else "right", overflow="fold")
    for r in rows:
        variant = "\n".join(setting.removeprefix(prefix) for setting in r["variant"].split(" "))
        table.add_row(variant, fmt_mean_std(r), str(r["n"]), fmt_delta(r), r["status"],
                      f"{r.get('params/neck', 0):,}", f"{r.get('gflops', 0):.2f}")
    return table


def main_effects(rows: list[dict]) -> list[dict]:
    """Per swept setting and value: the mean over every complete seed of every variant with that value.

    In a factorial grid this is the setting's main effect, averaged over all the other settings.
    """
    values: dict[tuple[str, str], list[float]] = {}
    for row in rows:
        for key, value in settings(row["variant"]).items():
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
    from ablate.sweep import DEFAULT_STORAGE, make_storage

    p = argparse.ArgumentParser(prog="python -m ablate.table", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--study", action="append", help="study name (repeat to merge studies; default: all)")
    p.add_argument("--storage", help=f"Optuna RDB URL (default: $ABLATE_STORAGE, else {DEFAULT_STORAGE})")
    p.add_argument("--format", choices=FORMATS, default="md")
    p.add_argument("--baseline", help="KEY=VALUE,... picking the row Δ is measured against (default: the best)")
    p.add_argument("--metric", default="val/mIoU", help="val/mIoU (each seed's best epoch) or another val/ metric")
    p.add_argument("--no-latency", action="store_true", help="skip measuring forward latency")
    p.add_argument("--out", help="write to this file instead of stdout")
    args = p.parse_args(argv)
    try:
        storage = make_storage(args.storage or os.environ.get("ABLATE_STORAGE") or DEFAULT_STORAGE)
        names = args.study or [s.study_name for s in optuna.get_all_study_summaries(storage)]
        trials = [t for name in names for t in _load(name, storage).get_trials(deepcopy=False)]
        rows = study_rows(trials, args.metric)
        if not rows:
            raise ConfigError(f"no finished trials in {', '.join(names) or 'this storage'}")
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


def _load(name: str, storage) -> optuna.Study:
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        known = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        raise ConfigError(f"no study {name!r} in this storage; studies: {', '.join(known) or 'none'}") from None


if __name__ == "__main__":
    sys.exit(main())
