"""Table output: markdown, LaTeX (booktabs), CSV, JSON, HTML and the terminal (rich)."""
from __future__ import annotations

import csv
import html
import io
import json

FORMATS = ("md", "latex", "csv", "json", "html")
COLUMNS = ("variant", "n", "mean", "std", "delta", "p_value", "params/neck", "params/total", "gflops",
           "latency_ms", "status", "seeds")


def settings(variant: str) -> dict[str, str]:
    """'a=1 b=x' -> {'a': '1', 'b': 'x'}."""
    return dict(s.partition("=")[::2] for s in variant.split(" ") if s)



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


def effects_to_rich(effects: list[dict], metric: str = "val/mIoU"):
    """Main effects for the terminal (rich)."""
    from rich.table import Table

    table = Table(title=f"main effects: {metric} averaged over the other settings")
    for col in ("setting", "value", "n runs", "mean ± std", "p (Welch)"):
        table.add_column(col, justify="left" if col in ("setting", "value") else "right", overflow="fold")
    for e in effects:
        p = "" if e.get("p_value") is None else f"{e['p_value']:.3g}"
        table.add_row(e["setting"], e["value"], str(e["n"]), fmt_mean_std(e), p)
    return table
