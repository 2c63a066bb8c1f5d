"""Table output: markdown, LaTeX (booktabs), CSV, JSON, HTML and the terminal (rich)."""

from __future__ import annotations

import csv
import html
import io
import json

from ablate.stats.directions import delta_unit, values_of
from ablate.stats.verdicts import ROW_FIELDS
from ablate.study.variants import common_prefix, settings

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


def fmt_delta(row: dict, spec: str = "+.2f") -> str:
    """'+1.23 [-0.40, +2.86]' (points, with the interval the verdict reads; `spec` "+.4g" for a metric's own units),
    'baseline', or '' without a mean."""
    if row.get("baseline"):
        return "baseline"
    if row.get("delta") is None:
        return ""
    ci = "" if row.get("ci_low") is None else f" [{row['ci_low']:{spec}}, {row['ci_high']:{spec}}]"
    return f"{row['delta']:{spec}}{ci}"


def delta_spec(unit: str) -> str:
    """How Δ is written: points with 2 decimals, a metric's own units with 4 significant digits."""
    return "+.2f" if unit == "points" else "+.4g"


def fmt_verdict(row: dict) -> str:
    """'▲ better', '▼ worse', '≈ equivalent', '? undecided (~12 seeds)' (seeds per variant that would decide), ''."""
    if row.get("baseline") or row.get("verdict") not in MARKS or not row.get("seeds"):
        return ""
    needed = row.get("seeds_needed")
    return MARKS[row["verdict"]] + (f" (~{needed} seeds)" if needed else "")


def verdict_note(
    alpha: float = 0.05, margin: float | None = None, looks: list | None = None, moderate=True, unit: str = "points"
) -> str:
    """One line saying how the verdicts were reached (under a table); Δ and the margin in `unit`."""
    level = f"{100 * (1 - 2 * alpha):.3g} %"
    sequential = f" (α per look of --until-decided, {looks[0]} to {looks[1]} seeds)" if looks else ""
    equivalent = f"; ≈ equivalent: the {level} CI of Δ inside ±{margin:g} {units(unit)} (TOST)" if margin else ""
    return (
        f"Δ vs the baseline in {units(unit)} with its {level} CI; paired t-test when the rows share seeds, else Welch"
        + (MODERATED_NOTE if moderate else " (plain, not moderated)")
        + "; "
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


def _cells(r: dict, keys: list[str], unit: str) -> list[str]:
    s = settings(r["variant"])
    lat = "" if r.get("latency_ms") is None else f"{r['latency_ms']:.1f}"
    return [
        *(s.get(k, "") for k in keys),
        fmt_mean_std(r),
        str(r["n"]),
        fmt_delta(r, delta_spec(unit)),
        _opt(r.get("p_value"), ".3g"),
        _opt(r.get("p_adjusted"), ".3g"),
        r.get("test") or "",
        fmt_verdict(r),
        _opt(r.get("params/neck"), ","),
        _opt(r.get("params/total"), ","),
        _opt(r.get("gflops"), ".2f"),
        lat,
        r["status"],
    ]


def _header(keys: list[str], metric: str, alpha: float, unit: str) -> list[str]:
    return [
        *keys,
        f"{metric} (mean ± std)",
        "n",
        f"Δ ({unit}) [{100 * (1 - 2 * alpha):.3g} % CI]",
        "p",
        "p (Holm)",
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
    header, body = _header(keys, metric, alpha, unit), [_cells(r, keys, unit) for r in rows]
    if fmt == "md":
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(c) + " |" for c in body]) + "\n" + (f"\n{note}\n" if note else "")
    if fmt == "latex":
        return _latex(header, body, len(keys))
    cells = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>\n" for row in body)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
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


def to_rich(rows: list[dict], title: str, metric: str = "val/mIoU", alpha: float = 0.05):
    """The table for the terminal, with the columns and values of `render`'s: the settings in one column, one per
    line, under their shared section."""
    from rich.table import Table

    prefix, keys, unit = (
        common_prefix([r["variant"] for r in rows]),
        varied_keys(rows),
        delta_unit(metric, values_of(rows)),
    )
    table = Table(title=title, caption=f"settings under {prefix}" if prefix else None)
    for col in ["variant", *_header(keys, metric, alpha, unit)[len(keys) :]]:
        table.add_column(col, justify="left" if col in ("variant", "test", "verdict", "status") else "right")
    for r in rows:
        variant = "\n".join(setting.removeprefix(prefix) for setting in r["variant"].split(" "))
        table.add_row(variant, *_cells(r, keys, unit)[len(keys) :])
    return table


EFFECTS_NOTE = (
    "OLS on every seed's value, each varied setting a categorical factor and the seed a block; pairwise interactions "
    "when they leave ≥ 4 residual df, else not testable; type-II F. p: permutation of the reduced model's residuals "
    "within seeds (Freedman–Lane), every order when there are few, which the test column says; p Holm: over the "
    "terms, * when < α. Level means are the model's, averaged evenly over the other settings; effect: the largest "
    "difference between levels (for an interaction, of differences), in points."
)
EFFECTS_COLUMNS = ("term", "df", "F", "p", "p Holm", "test", "effect (points)", "level means")


def fmt_levels(term: dict) -> str:
    """'bn 0.7012 · none 0.6523': a term's level means."""
    return " · ".join(f"{lv['value']} {lv['mean']:.4f}" for lv in term["levels"])


def effects_cells(term: dict) -> list[str]:
    """One term of ablate.stats.factorial.factorial_effects as the cells of EFFECTS_COLUMNS."""
    holm = _opt(term["p_adjusted"], ".3g") + (" *" if term["significant"] else "")
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


def effects_to_rich(effects: list[dict], metric: str = "val/mIoU", alpha: float = 0.05):
    """Main effects and interactions (ablate.stats.factorial.factorial_effects) for the terminal (rich)."""
    from rich.table import Table

    table = Table(title=f"main effects and interactions on {metric}", caption=effects_caption(effects, alpha))
    for col in EFFECTS_COLUMNS:
        left = col in ("term", "test", "level means")
        table.add_column(col, justify="left" if left else "right", overflow="fold")
    for e in effects:
        table.add_row(*effects_cells(e))
    return table
