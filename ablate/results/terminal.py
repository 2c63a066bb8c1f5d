"""The comparison table on a terminal: the columns that fit its width, by priority, words never broken; columns
the same in every row said once under it; the settings' shared section said once."""

from __future__ import annotations

import io
import os
import shutil

from rich import box
from rich.console import Console
from rich.table import Table

from ablate.results.conclusion import conclusion, effects_prefix
from ablate.results.formats import (
    clipped_note,
    delta_bounds,
    effects_caption,
    effects_cells,
    effects_header,
    header,
    row_cells,
    varied_keys,
)
from ablate.stats.directions import delta_unit, values_of
from ablate.study.variants import common_prefix

# what the columns are (after the settings, "setting"), which are shown at any width (wrapped at their spaces if
# need be, the last dropped while a word would break), the order the others are given room in, and which may wrap
KINDS = ("mean", "n", "Δ", "p", "Holm p", "test", "verdict", "neck params", "total params", "GFLOPs", "latency (ms)",
         "status")  # fmt: skip
ESSENTIAL = ("setting", "mean", "n", "Δ", "verdict")
PRIORITY = ("Holm p", "neck params", "GFLOPs", "latency (ms)", "p", "total params", "test", "status")
FLEXIBLE = ("Δ", "verdict", "test", "status")
EFFECT_KINDS = ("term", "df", "F", "p", "Holm p", "test", "effect", "level means")
EFFECT_LAYOUT = (("term", "effect", "Holm p", "test"), ("level means", "F", "p", "df"), ("term", "level means", "test"))


def width() -> int:
    """The width a table is laid out to: $COLUMNS, else the terminal's, else 100 (a pipe or a file)."""
    return int(os.environ.get("COLUMNS") or 0) or shutil.get_terminal_size((100, 24)).columns


def columns(rows: list[dict], metric: str, alpha: float) -> tuple[list[tuple[str, str, list[str]]], list[str], str]:
    """([(kind, header, cells)] settings first (kind "setting"), each key without the shared section), keys, that
    section ('model.neck.')."""
    keys, unit = varied_keys(rows), delta_unit(metric, values_of(rows))
    prefix, bounds = common_prefix([r["variant"] for r in rows]), delta_bounds(rows, unit)
    names = header(keys, metric, alpha, unit)
    body = [row_cells(r, keys, unit, alpha, bounds) for r in rows]
    kinds = ["setting"] * len(keys) + list(KINDS)
    shown = [k.removeprefix(prefix) for k in keys] + [n.replace(" (", "\n(") for n in names[len(keys) :]]
    return (
        [(kind, name, [cells[i] for cells in body]) for i, (kind, name) in enumerate(zip(kinds, shown))],
        keys,
        prefix,
    )


def fold(cols: list[tuple[str, str, list[str]]], keys: int, keep=("mean", "Δ")) -> tuple[list, list[str]]:
    """(the columns that vary, ['GFLOPs 0.18', ...] for each other column the same in every row it has a value);
    a column empty in every row is left out; the first `keys` columns and the `keep` kinds always stay."""
    kept, same = list(cols[:keys]), []
    for kind, name, cells in cols[keys:]:
        values = {c for c in cells if c and c != "baseline"}
        if len(values) > 1 or (len(cells) < 2 and values) or kind in keep:
            kept.append((kind, name, cells))
        elif values:
            same.append(f"{name.replace(chr(10), ' ')} {values.pop()}")
    return kept, same


def build(cols: list[tuple[str, str, list[str]]], flexible=FLEXIBLE, title: str | None = None) -> Table:
    """A rich table of `cols`; the cells of `flexible` columns may wrap at their spaces, no others; numbers to the
    right."""
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, title_justify="left")
    for kind, name, _ in cols:
        right = kind in ("mean", "n", "Δ", "p", "Holm p", "F", "df", "effect") or "params" in kind or "(" in kind
        table.add_column(name, justify="right" if right else "left", no_wrap=kind not in flexible)
    for i in range(len(cols[0][2]) if cols else 0):
        table.add_row(*(cells[i] for _, _, cells in cols))
    return table


def renders_whole(cols: list[tuple[str, str, list[str]]], flexible, room: int) -> bool:
    """True when the table of `cols`, laid out in `room` characters, shows every word of its headers and cells
    whole (rich would otherwise fold a word or cut it with '…')."""
    console = Console(width=room, file=io.StringIO(), color_system=None)
    console.print(build(cols, flexible))
    lines = console.file.getvalue().splitlines()
    words = {w for _, name, cells in cols for text in [name, *cells] for w in text.split()}
    return "…" not in "".join(lines) and all(any(w in line for line in lines) for w in words)


def fit(cols: list, room: int, layout=(ESSENTIAL, PRIORITY, FLEXIBLE)) -> tuple[list, list[str]]:
    """(the columns shown, the names of those left out), in the table's own order: the essential kinds (wrapped
    at their spaces if need be, the last of them dropped while a word would break), then by priority each other
    column that still fits with no cell wrapped. `layout`: (essential, priority, flexible) kinds."""
    essentials, priority, flexible = layout
    wide = Console(width=100_000, file=io.StringIO())  # measures a table's width with no cell wrapped
    essential = [i for i, c in enumerate(cols) if c[0] in essentials]
    while len(essential) > 1 and not renders_whole([cols[i] for i in essential], flexible, room):
        essential.pop(max(range(len(essential)), key=lambda j: essentials.index(cols[essential[j]][0])))
    chosen, left_out = set(essential), []
    for i in sorted(
        set(range(len(cols))) - chosen, key=lambda i: priority.index(cols[i][0]) if cols[i][0] in priority else -1
    ):
        trial = build([cols[j] for j in sorted(chosen | {i})], flexible)
        if wide.measure(trial).maximum <= room:
            chosen.add(i)
        else:
            left_out.append(cols[i][1].replace("\n", " "))
    return [cols[j] for j in sorted(chosen)], left_out


def terminal_table(rows: list[dict], title: str, metric: str, alpha: float, room: int | None = None) -> tuple:
    """(the rich Table that fits `room` (default `width()`), the lines to print under it)."""
    room = room or width()
    cols, keys, prefix = columns(rows, metric, alpha)
    kept, same = fold(cols, len(keys))
    shown, left_out = fit(kept, room)
    lines = [f"settings under {prefix}"] if prefix else []
    if same:
        lines.append("the same in every row: " + "; ".join(same))
    if clipped := clipped_note(rows, delta_unit(metric, values_of(rows))):
        lines.append(clipped)
    if left_out:
        lines.append(f"left out at this width ({room} columns): {', '.join(left_out)} (--format md shows them)")
    return build(shown, title=title), lines


def print_table(out: Console, table, title: str) -> None:
    """The comparison table (ablate.results.tables.Table) on `out`, fitted to `width()`, and its notes."""
    shown, lines = terminal_table(table.rows, title, table.metric, table.verdicts["alpha"])
    out.print(shown, width=width())
    for line in [*lines, table.note]:
        out.print(line)


def print_end(out: Console, table, title: str, notes: list[str] = (), again: str | None = None) -> None:
    """A study's end on `out`: its table, its main effects, `notes` (a race's or --until-decided's line) and its
    conclusion in words (`again`: the command that ran it, for the conclusion's next step)."""
    print_table(out, table, title)
    if table.effects:
        print_effects(out, table.effects, table.metric, table.verdicts["alpha"])
    for line in [*notes, "", *conclusion(table, table.effects, again)]:
        out.print(line)


def print_effects(out: Console, effects: list[dict], metric: str, alpha: float) -> None:
    """Main effects and interactions (ablate.stats.factorial) on `out`, fitted to `width()` as the table is."""
    names, prefix = effects_header(alpha), effects_prefix(effects)
    cells = [[c.replace(prefix, "") if i == 0 else c for i, c in enumerate(effects_cells(e))] for e in effects]
    cols = [(kind, name.replace(" (", "\n("), [row[i] for row in cells]) for i, (kind, name) in
            enumerate(zip(EFFECT_KINDS, names))]  # fmt: skip
    kept, same = fold(cols, 1, keep=("effect",))
    shown, left_out = fit(kept, width(), EFFECT_LAYOUT)
    title = f"main effects and interactions on {metric}" + (f" (settings under {prefix})" if prefix else "")
    out.print(build(shown, EFFECT_LAYOUT[2], title=title), width=width())
    for line in (["the same in every term: " + "; ".join(same)] if same else []) + [effects_caption(effects, alpha)]:
        out.print(line)
    if left_out:
        out.print(f"left out at this width ({width()} columns): {', '.join(left_out)}")
