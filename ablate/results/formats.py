"""Table output: markdown, LaTeX (booktabs), CSV, JSON, HTML and the terminal (rich)."""

from __future__ import annotations

import csv
import html
import io
import json

from ablate.stats import MAX_SEEDS, ROW_FIELDS
from ablate.stats.directions import delta_unit, values_of
from ablate.study.variants import settings

FORMATS = ("md", "latex", "csv", "json", "html")
COLUMNS = (
    "variant",
    "n",
    "mean",
    "std",
    *ROW_FIELDS,
    "params/neck",
    "params/total",
    "gflops",
    "latency_ms",
    "status",
    "seeds",
)
MODERATED_NOTE = (  # ablate.stats.moderated
    ", moderated when 3 or more rows are compared (each row's variance shrunk toward the rows' common one, "
    "limma's empirical Bayes t; test column)"
)
MARKS = {"better": "▲ better", "worse": "▼ worse", "equivalent": "≈ equivalent", "undecided": "? undecided"}


def fmt_mean_std(row: dict, scale: float = 1.0) -> str:
    """'0.2712 ± 0.0123' (std over seeds, ddof=1), or the status when no seed completed."""
    if row["mean"] is None:
        return row.get("status", "-")
    std = "" if row["std"] is None else f" ± {row['std'] * scale:.4f}"
    return f"{row['mean'] * scale:.4f}{std}"


def fmt_delta(row: dict, spec: str = "+.2f", bounds: tuple[float, float] | None = None) -> str:
    """'+1.23 [-0.40, +2.86]' (points, with the interval the verdict reads; `spec` "+.4g" for a metric's own units),
    'baseline', or '' without a mean. An interval bound past `bounds` (the differences the metric can take,
    `delta_bounds`) is shown at the bound, marked † (CLIPPED_NOTE)."""
    if row.get("baseline"):
        return "baseline"
    if row.get("delta") is None:
        return ""
    if row.get("ci_low") is None:
        return f"{row['delta']:{spec}}"
    lo, hi = row["ci_low"], row["ci_high"]
    low = f"{max(lo, bounds[0]):{spec}}†" if bounds and lo < bounds[0] else f"{lo:{spec}}"
    high = f"{min(hi, bounds[1]):{spec}}†" if bounds and hi > bounds[1] else f"{hi:{spec}}"
    return f"{row['delta']:{spec}} [{low}, {high}]"


def delta_bounds(rows: list[dict], unit: str) -> tuple[float, float] | None:
    """The differences from the baseline row a fraction (0 to 1) can take, in points: from -100 × the baseline's
    mean to 100 × (1 - it); None for a metric in its own units (no range known) or without a baseline."""
    base = next((r for r in rows if r.get("baseline") and r.get("mean") is not None), None)
    return (-100 * base["mean"], 100 * (1 - base["mean"])) if unit == "points" and base else None


def clipped_note(rows: list[dict], unit: str) -> str:
    """A line for under a table when an interval reaches past what the metric can take (and is shown cut there)."""
    bounds = delta_bounds(rows, unit)
    if bounds is None or not any(
        r.get("ci_low") is not None and (r["ci_low"] < bounds[0] or r["ci_high"] > bounds[1]) for r in rows
    ):
        return ""
    return (
        "†: the interval reaches past the differences the metric (0 to 1) can take from the baseline's mean, "
        "and is shown cut there: its seeds are too few or too spread to bound Δ"
    )


def delta_spec(unit: str) -> str:
    """How Δ is written: points with 2 decimals, a metric's own units with 4 significant digits."""
    return "+.2f" if unit == "points" else "+.4g"


def fmt_verdict(row: dict) -> str:
    """'▲ better', '▼ worse', '≈ equivalent', '? undecided (~12 seeds)' (seeds per variant that would decide), ''."""
    if row.get("baseline") or row.get("verdict") not in MARKS or not row.get("seeds"):
        return ""
    needed = row.get("seeds_needed")
    return MARKS[row["verdict"]] + (f" ({fmt_needed(needed)} seeds)" if needed else "")


def fmt_needed(needed: int) -> str:
    """'~12' seeds, or '≥ 1000' at the estimate's cap (MAX_SEEDS: that many or more)."""
    return f"≥ {needed}" if needed >= MAX_SEEDS else f"~{needed}"


def verdict_note(
    alpha: float = 0.05, margin: float | None = None, looks: list | None = None, moderate=True, unit: str = "points"
) -> str:
    """One line saying how the verdicts were reached (under a table); Δ and the margin in `unit`."""
    level = f"{100 * (1 - 2 * alpha):.3g} %"
    sequential = f" (α per look of --until-decided, {looks[0]} to {looks[1]} seeds)" if looks else ""
    equivalent = f"; ≈ equivalent: the {level} CI of Δ inside ±{margin:g} {units(unit)} (TOST)" if margin else ""
    return (
        f"Δ vs the baseline in {units(unit)} with its {level} CI; paired (Δ over the seeds both rows ran) when the "
        "rows share seeds, else Welch" + (MODERATED_NOTE if moderate else " (plain, not moderated)") + "; "
        f"▲ better / ▼ worse: Holm-adjusted p < {alpha:.3g}{sequential}{equivalent}; ? undecided: not yet "
        "(~k: seeds per variant that would decide with 80 % probability at the observed Δ and spread)"
    )


def units(unit: str) -> str:
    """'points', or 'the units of val_loss' for a metric's own."""
    return unit if unit == "points" else f"the units of {unit}"


def order_note(metric: str, direction: str, how: str) -> str:
    """'Rows best first by val_loss: lower is better (minimize, inferred from its name).'"""
    better = "higher" if direction == "maximize" else "lower"
    return f"Rows best first by {metric}: {better} is better ({direction}, {how})."


def _opt(value, spec: str) -> str:
    """`value` formatted, or '' when it is not known (a LightningCLI study's model has no GFLOPs or latency)."""
    return "" if value is None else format(value, spec)


def holm_cell(p_adjusted: float | None, alpha: float) -> str:
    """Holm's p with a * when it decides (below the verdicts' α): the same rule in every table."""
    return _opt(p_adjusted, ".3g") + (" *" if p_adjusted is not None and p_adjusted < alpha else "")


def row_cells(r: dict, keys: list[str], unit: str, alpha: float, bounds=None) -> list[str]:
    """A row's cells under `header`: its settings of `keys`, then the metric, verdict and cost columns."""
    s = settings(r["variant"])
    lat = "" if r.get("latency_ms") is None else f"{r['latency_ms']:.1f}"
    return [
        *(s.get(k, "") for k in keys),
        fmt_mean_std(r),
        str(r["n"]),
        fmt_delta(r, delta_spec(unit), bounds),
        _opt(r.get("p_value"), ".3g"),
        holm_cell(r.get("p_adjusted"), alpha),
        r.get("test") or "",
        fmt_verdict(r),
        _opt(r.get("params/neck"), ","),
        _opt(r.get("params/total"), ","),
        _opt(r.get("gflops"), ".2f"),
        lat,
        r["status"],
    ]


def header(keys: list[str], metric: str, alpha: float, unit: str) -> list[str]:
    """The table's column names; Holm's p names the threshold its verdicts and stars use."""
    return [
        *keys,
        f"{metric} (mean ± std)",
        "n",
        f"Δ ({unit}) [{100 * (1 - 2 * alpha):.3g} % CI]",
        "p",
        f"Holm p (decides < {alpha:.2g})",
        "test",
        "verdict",
        "neck params",
        "total params",
        "GFLOPs",
        "latency (ms)",
        "status",
    ]


def varied_keys(rows: list[dict]) -> list[str]:
    """The dotted keys that appear in any row's variant, in first-seen order."""
    keys: dict[str, None] = {}
    for r in rows:
        keys.update(dict.fromkeys(settings(r["variant"])))
    return list(keys)


def render(
    rows: list[dict], fmt: str, metric: str = "val/mIoU", alpha: float = 0.05, note: str = "", direction: str = ""
) -> str:
    """The table as md, latex (booktabs tabular), csv, json (list of rows) or html; md and html end with `note`
    (how the verdicts were reached, `verdict_note`); `alpha` names the level of the CI column. JSON rows carry the
    varied settings typed as the space declares them, the metric and its `direction`."""
    keys = varied_keys(rows)
    if fmt == "json":
        shown = {"metric": metric, **({"direction": direction} if direction else {})}
        typed = [r.get("settings") or settings(r["variant"]) for r in rows]
        return json.dumps([{**{k: r.get(k) for k in COLUMNS}, **shown, **t} for r, t in zip(rows, typed)], indent=2)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow([*keys, *COLUMNS])
        for r in rows:
            s = settings(r["variant"])
            writer.writerow(
                [
                    *(s.get(k, "") for k in keys),
                    *(json.dumps(r["seeds"]) if c == "seeds" else r.get(c) for c in COLUMNS),
                ]
            )
        return out.getvalue()
    unit = delta_unit(metric, values_of(rows))
    names, bounds = header(keys, metric, alpha, unit), delta_bounds(rows, unit)
    body = [row_cells(r, keys, unit, alpha, bounds) for r in rows]
    note = " ".join(filter(None, [note, clipped_note(rows, unit)]))
    if fmt == "md":
        lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
        return "\n".join(lines + ["| " + " | ".join(c) + " |" for c in body]) + "\n" + (f"\n{note}\n" if note else "")
    if fmt == "latex":
        return _latex(names, body, len(keys))
    cells = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>\n" for row in body)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in names)
    tail = f'<p class="verdicts">{html.escape(note)}</p>\n' if note else ""
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{cells}</tbody>\n</table>\n{tail}"


def _latex(header: list[str], body: list[list[str]], keys: int) -> str:
    def esc(text: str) -> str:
        for a, b in (
            ("\\", r"\textbackslash{}"),
            ("_", r"\_"),
            ("%", r"\%"),
            ("&", r"\&"),
            ("#", r"\#"),
            ("~", r"$\sim$"),
            ("±", r"$\pm$"),
            ("Δ", r"$\Delta$"),
            ("▲", r"$\uparrow$"),
            ("▼", r"$\downarrow$"),
            ("≈", r"$\approx$"),
        ):
            text = text.replace(a, b)
        return text

    lines = [
        r"\begin{tabular}{" + "l" * keys + "rrrrrllrrrrl}",
        r"\toprule",
        " & ".join(map(esc, header)) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join(map(esc, row)) + r" \\" for row in body]
    return "\n".join(lines + [r"\bottomrule", r"\end{tabular}"]) + "\n"


EFFECTS_NOTE = (
    "OLS on every seed's value, each varied setting a categorical factor and the seed a block; pairwise interactions "
    "when they leave ≥ 4 residual df, else not testable; type-II F. p: permutation of the reduced model's residuals "
    "within seeds (Freedman–Lane), every order when there are few, which the test column says; Holm p: over the "
    "terms, * when < α. Level means are the model's, averaged evenly over the other settings; effect: the largest "
    "difference between levels (for an interaction, of differences), in points."
)
EFFECTS_COLUMNS = ("term", "df", "F", "p", "Holm p", "test", "effect (points)", "level means")


def effects_header(alpha: float) -> list[str]:
    """EFFECTS_COLUMNS with Holm's p naming the threshold its stars use, as the comparison table's does."""
    return [f"Holm p (decides < {alpha:.2g})" if c == "Holm p" else c for c in EFFECTS_COLUMNS]


def fmt_levels(term: dict) -> str:
    """'bn 0.7012 · none 0.6523': a term's level means."""
    return " · ".join(f"{lv['value']} {lv['mean']:.4f}" for lv in term["levels"])


def effects_cells(term: dict) -> list[str]:
    """One term of ablate.stats.factorial.factorial_effects as the cells of EFFECTS_COLUMNS."""
    holm = _opt(term["p_adjusted"], ".3g") + (" *" if term["significant"] else "")  # as holm_cell: p < α
    numbers = [_opt(term["df"], "d"), _opt(term["F"], ".3g"), _opt(term["p_value"], ".3g"), holm]
    return [term["term"], *numbers, term["test"], _opt(term["effect"], ".2f"), fmt_levels(term)]


def decidable_note(effects: list[dict], alpha: float = 0.05) -> str | None:
    """A line for under the table when the runs bound what can be decided: the least p the permutations give any
    term (p_floor), times the number of terms Holm corrects over, is not below α. None when a term can be called."""
    tested = [e for e in effects if e["p_value"] is not None]
    if not tested or min(e["p_floor"] for e in tested) * len(tested) < alpha:
        return None
    least = min(e["p_floor"] for e in tested)
    return (
        f"No term can be called with these runs: however large an effect, its permutation p is at least {least:.3g}, "
        f"and Holm over {len(tested)} terms needs one below {alpha / len(tested):.3g}. More seeds a variant lift this."
    )


def effects_caption(effects: list[dict], alpha: float) -> str:
    """EFFECTS_NOTE, and what the runs cannot decide when they bound it (decidable_note)."""
    return " ".join(filter(None, [EFFECTS_NOTE, decidable_note(effects, alpha)]))
