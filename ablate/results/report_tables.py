"""The report's tables: every column header in words with its exact key as the tooltip, every table in a box that
scrolls sideways when it is wider than the page; the main effects and the receptive fields (Luo et al. 2016's ERF,
HDC's gridding, Wang et al. 2018)."""

from __future__ import annotations

import base64
import html
import math
import re
import statistics

HEADER_WORDS = (  # (a header as ablate.results.formats writes it or a summary key, in words, the exact key)
    (r"variant", "variant", "variant"),
    (r"(?P<m>.+) \(mean ± std\)", "{m}: mean ± standard deviation over seeds", "mean, std"),
    (r"n", "seeds", "n"),
    (
        r"Δ \((?P<u>[^)]+)\) \[(?P<l>.+) CI\]",
        "difference from the baseline ({u}) [{l} interval]",
        "delta, ci_low, ci_high",
    ),
    (r"(?:p \(Holm\)|p Holm|Holm p)(?P<r>.*)", "p-value corrected for the comparisons made (Holm){r}", "p_adjusted"),
    (r"p(?: \(.+\))?", "p-value", "p_value"),
    (r"test", "test used", "test"),
    (r"verdict", "verdict", "verdict"),
    (r"neck params", "parameters of the neck", "params/neck"),
    (r"total params", "parameters of the whole model", "params/total"),
    (r"GFLOPs", "billions of operations for one image (GFLOPs)", "gflops"),
    (r"latency \(ms\)", "time to run one image (ms)", "latency_ms"),
    (r"status", "status", "status"),
    (r"term(?: \(.+\))?", "setting, or pair of settings", "term"),
    (r"df", "degrees of freedom", "df"),
    (r"F", "F statistic", "F"),
    (r"effect \((?P<u>.+)\)", "largest difference between its levels ({u})", "effect"),
    (r"level means", "mean at each level", "levels"),
    (r"rf/encoder", "receptive field of the encoder (px)", None),
    (r"feature_px", "longer side of the neck's input map (positions)", None),
    (r"rf/(?P<b>.+)", "receptive field through {b} (px)", None),
    (r"taps9/(?P<b>.+)", "share of positions where {b} sees all 9 taps", None),
    (r"gridding_holes", "holes in the 3×3 grid", None),
    (r"(?P<neck>.+)/gridding_holes", "holes in the 3×3 grid of {neck}", None),
    (r"erf/r(?P<q>\d+)_px", "radius holding {q} % of the effective receptive field (px)", None),
)


def branch_words(branch: str) -> str:
    """'rate6' -> 'the rate-6 branch', '1x1' -> 'the 1×1 branch', 'aspp/image_pool' -> 'the image pooling branch of
    aspp' (a key of one neck among several, ablate.callbacks.necks)."""
    path, _, name = branch.rpartition("/")
    rate = re.fullmatch(r"rate(\d+)", name)
    words = (
        f"the rate-{rate[1]} branch"
        if rate
        else {"1x1": "the 1×1 branch", "image_pool": "the image pooling branch"}.get(
            name, f"the {name.replace('_', ' ')} branch"
        )
    )
    return words + (f" of {path}" if path else "")


def header_words(text: str) -> tuple[str, str]:
    """(words, exact key) of a column header; a header no pattern knows (a swept setting's dotted key) is its last
    part in words ('model.neck.image_pooling' -> 'image pooling')."""
    for pattern, words, key in HEADER_WORDS:
        found = re.fullmatch(pattern, text)
        if found:
            parts = found.groupdict()
            if "b" in parts:
                parts["b"] = branch_words(parts["b"])
            return words.format(**parts), key or text
    return text.rsplit(".", 1)[-1].replace("_", " "), text


def boxed(table: str) -> str:
    """HTML tables (as ablate.results.formats renders them) with every header in words, titled with its exact key,
    each table in a box that scrolls sideways."""

    def titled(th: re.Match) -> str:
        words, key = header_words(html.unescape(th[1]))
        return f'<th title="{html.escape(key)}">{html.escape(words)}</th>'

    table = re.sub(r"<th>(.*?)</th>", titled, table)
    return table.replace("<table>", '<div class="scroll"><table>').replace("</table>", "</table></div>")


def html_table(header: list[str], rows: list[list[str]]) -> str:
    """A plain HTML table of escaped cells under `header` (raw keys; `boxed` puts them in words)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>\n" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>\n{body}</tbody></table>"


def effects_table(effects: list[dict], metric: str = "val/mIoU", alpha: float = 0.05) -> str:
    """Main effects and interactions of the swept settings (the table's, ablate.stats.factorial), or a note."""
    from ablate.results.formats import effects_caption, effects_cells, effects_header

    if not effects:
        return note("one swept setting, or runs that cannot estimate a model: the comparison table is its effect")
    header = [c if c != "term" else f"term ({metric})" for c in effects_header(alpha)]
    table = html_table(header, [effects_cells(e) for e in effects])
    return boxed(table) + f"<p>{html.escape(effects_caption(effects, alpha))}</p>"


def note(text: str) -> str:
    """A visible note in place of a plot or image that cannot be made."""
    return f'<p class="note">{html.escape(text)}</p>'


RF_KEYS = ("rf/", "taps9/", "erf/", "feature_px", "gridding_holes")  # what ablate.callbacks.NeckAnalysis leaves


def rf_order(key: str) -> tuple:
    """Where a receptive-field key's column goes: the encoder's and the map's first, then each branch's receptive
    field beside its full-tap share (1×1, atrous by rate, image pooling), the gridding holes, the ERF's radii."""
    first = {"rf/encoder": 0, "feature_px": 1}
    kind, _, branch = key.partition("/")
    if key in first or key.endswith("gridding_holes") or kind == "erf":
        group = 0 if key in first else 2 if kind != "erf" else 3
        return group, first.get(key, 0), 0, "", key
    name = branch.rsplit("/", 1)[-1]
    rate = re.fullmatch(r"rate(\d+)", name)
    return 1, 1 if rate else 0 if name == "1x1" else 2, int(rate[1]) if rate else 0, branch, kind


def rf_numbers(runs: list[dict]) -> dict[str, float]:
    """A variant's receptive-field numbers, each the mean over the runs that have it as a finite number."""
    values: dict[str, list[float]] = {}
    for run in runs:
        for k, v in run["summary"].items():
            if k.startswith(RF_KEYS) and isinstance(v, (int, float)) and math.isfinite(v):
                values.setdefault(k, []).append(v)
    return {k: statistics.fmean(v) for k, v in values.items()}


def receptive_field_section(rows: list[dict], runs: dict[str, list[dict]], labels: dict[str, str]) -> str:
    """Each variant's receptive fields as its runs' ablate.callbacks.NeckAnalysis measured them (theoretical ones
    per branch, the effective receptive field's radii; mean over its runs) and the lowest seed's ERF image; a
    column only for a number some variant has ("–" where a variant has no such branch)."""
    numbers = {r["variant"]: rf_numbers(runs.get(r["variant"], [])) for r in rows}
    keys = sorted({k for n in numbers.values() for k in n}, key=rf_order)
    if not keys:
        return note("no run has receptive-field numbers (ablate.callbacks.NeckAnalysis found no ablate neck)")
    cells = [[labels[v], *(f"{n[k]:.4g}" if k in n else "–" for k in keys)] for v, n in numbers.items() if n]
    images = [erf_image(runs.get(v, []), labels[v]) for v in numbers]
    gallery = "".join(images) if any(images) else note("no run folder has erf.png")
    return (
        boxed(html_table(["variant", *keys], cells))
        + "<p>Effective receptive field of each variant's final model (lowest seed; the centre pixel's gradient "
        f"on the first validation images):</p>{gallery}"
    )


def erf_image(runs: list[dict], label: str) -> str:
    """The lowest seed's erf.png as a captioned inline figure, or nothing."""
    for run in runs:
        png = run["folder"] / "erf.png"
        if png.is_file():
            data = base64.b64encode(png.read_bytes()).decode()
            return (
                f'<figure class="erf"><img class="erf" alt="ERF" src="data:image/png;base64,{data}">'
                f"<figcaption>{html.escape(label)}</figcaption></figure>"
            )
    return ""
