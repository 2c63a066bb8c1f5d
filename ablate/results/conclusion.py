"""A comparison table's conclusion in words: what is decided, what is equivalent, what is still open and what would
decide it, and which settings matter over all variants; from the same numbers the table shows."""

from __future__ import annotations

from ablate.results.formats import delta_bounds, fmt_delta
from ablate.stats.directions import delta_unit, values_of
from ablate.stats.verdicts import MAX_SEEDS, POWER
from ablate.study.variants import common_prefix, settings, short_labels

OPEN_SHOWN = 3  # rows not decided yet named in the conclusion, the largest differences first


def conclusion(table, effects: list[dict] = (), again: str | None = None) -> list[str]:
    """Lines of plain text: a head naming the metric, the baseline and the rule a verdict needs, the factorial
    effects (ablate.stats.factorial) when given, one line a compared row (decided, equivalent, the largest open
    ones), and what would decide the open rows: `again` (the sweep's own command, when known) with the seeds."""
    rows, v, base = table.rows, table.verdicts, table.base
    if base is None:
        return ["Nothing to conclude yet: no variant has a finished seed."]
    if len(rows) < 2:
        return ["One variant only: there is nothing to compare it with."]
    unit, prefix = delta_unit(table.metric, values_of(rows)), common_prefix([r["variant"] for r in rows])
    better = "higher" if table.direction == "maximize" else "lower"
    which = " (the best row)" if base is rows[0] else ""
    labels = short_labels(rows)  # as the report and --until-decided's line name rows
    lines = [
        f"Conclusion on {table.metric} ({better} is better), against {labels[base['variant']]}{which}: {_rule(v, unit)}"
    ]
    compared = [r for r in rows if not r.get("baseline") and r.get("mean") is not None]
    if not any(r.get("test") for r in compared):
        return lines + [_nothing_testable(compared)]
    order, bounds = {"better": 0, "worse": 0, "equivalent": 1, "undecided": 2}, delta_bounds(rows, unit)
    tested = sorted(
        (r for r in compared if r.get("test")), key=lambda r: (order.get(r["verdict"], 3), -abs(r["delta"]))
    )
    shown = [r for r in tested if r["verdict"] != "undecided"] + [r for r in tested if r["verdict"] == "undecided"][
        :OPEN_SHOWN
    ]
    lines += _effects(effects, v["alpha"], table.direction, unit)
    for r in shown:
        change = _change(r, base, prefix) or labels[r["variant"]]
        lines.append(f"- {change}: {_delta(r, unit, bounds)}, {_verdict(r, v, unit)}")
    if len(tested) > len(shown):
        lines.append(f"- {len(tested) - len(shown)} more row(s) not decided yet, with smaller differences (the table)")
    return lines + _next_step([r for r in shown if r["verdict"] == "undecided"], v, again)


def _rule(v: dict, unit: str) -> str:
    """What a verdict needs: Holm's p below α (per look, with why), and the equivalence margin or its absence."""
    alpha, looks, nominal = v["alpha"], v.get("looks"), v.get("nominal_alpha")
    spread = (
        f" (α {nominal:g} spread over the looks at {looks[0]} to {looks[1]} seeds a variant, so that adding seeds "
        f"until decided keeps false verdicts at {nominal:g})"
        if looks and nominal
        else ""
    )
    tie = (
        f"; equivalent when its interval lies inside ±{v['margin']:g} {unit}"
        if v.get("margin")
        else "; no equivalence margin is set, so no row can be called a tie (--margin)"
    )
    return f"a row is decided when its Holm p is below {alpha:.2g}{spread}{tie}."


def _change(row: dict, base: dict, prefix: str) -> str:
    """'image_pooling=false (baseline true)': the settings in which `row` differs from the baseline ('' if none)."""
    mine, theirs = settings(row["variant"]), settings(base["variant"])
    diff = [f"{k.removeprefix(prefix)}={v} (baseline {theirs[k]})" for k, v in mine.items() if theirs.get(k) != v]
    return ", ".join(diff)


def _delta(row: dict, unit: str, bounds) -> str:
    """'-21.8 points [-58.0, +14.4]': Δ and its interval, cut at what the metric can take as the table shows it."""
    text = fmt_delta(row, "+.1f" if unit == "points" else "+.4g", bounds)
    return text.replace(" [", f" {unit} [" if unit == "points" else f" (in {unit}) [", 1)


def _verdict(row: dict, v: dict, unit: str) -> str:
    """How the row's verdict reads, and for an open row what would decide it."""
    alpha, p = v["alpha"], row.get("p_adjusted")
    if row["verdict"] in ("better", "worse"):
        return f"{row['verdict']}: decided (Holm p {p:.2g} < {alpha:.2g})"
    if row["verdict"] == "equivalent":
        return f"equivalent: its interval lies inside ±{v['margin']:g} {unit}"
    held = f"Holm p {p:.2g}, needs < {alpha:.2g}" if p is not None else "no p"
    return f"not decided yet ({held}){_next(row, v)}"


def _next(row: dict, v: dict) -> str:
    """'; about 6 seeds a variant would decide it with 80 % probability' or ''."""
    need = row.get("seeds_needed")
    if not need:
        return ""
    if need >= MAX_SEEDS:
        tie = "" if v.get("margin") else "; a --margin would let it be called a tie"
        return f"; no number of seeds within reach would decide it (its Δ is small against its spread){tie}"
    return f"; about {need} seeds a variant would decide it with {100 * POWER:.0f} % probability"


def _next_step(open_rows: list[dict], v: dict, again: str | None) -> list[str]:
    """One line: the command that adds the seeds the open rows shown need (the largest estimate within reach)."""
    needs = [r["seeds_needed"] for r in open_rows if r.get("seeds_needed") and r["seeds_needed"] < MAX_SEEDS]
    if not needs:
        return []
    need, looks, command = max(needs), v.get("looks"), again or "the sweep's command"
    if looks and need <= looks[1] and any(r["n"] < looks[1] for r in open_rows):
        return [f"- Next: {command} goes on adding seeds to these rows (its finished runs are kept)."]
    flags = f"--max-seeds {max(need, looks[1] + 1)}" if looks else f"--until-decided --max-seeds {need}"
    grow = " (a larger --max-seeds lowers the α per look, so the estimates grow a little)" if looks else ""
    return [f"- Next, to decide them: {command} {flags}{grow}; its finished runs are kept."]


def effects_prefix(effects: list[dict]) -> str:
    """The dotted section every factor of `effects` shares ('model.neck.'), to name terms short."""
    return common_prefix([" ".join(f"{f}=" for f in e["factors"]) for e in effects])


def _nothing_testable(rows: list[dict]) -> str:
    ones = sum(r["n"] < 2 for r in rows)
    return (
        f"- Nothing can be decided yet: a verdict needs 2 or more seeds of each variant, and {ones} of {len(rows)} "
        "compared variants have one: give the sweep 2 or more seeds (its `seeds:`, or --seeds 0,1,2)."
    )


def _effects(effects: list[dict], alpha: float, direction: str, unit: str) -> list[str]:
    """One line on the settings over all variants (main effects, seeds as blocks): decided ones first."""
    mains = [e for e in effects if e["p_value"] is not None and len(e["factors"]) == 1]
    if not mains:
        return []
    parts, prefix = [], effects_prefix(effects)
    for e in sorted(mains, key=lambda e: (not e["significant"], -e["effect"])):
        pick = max if direction == "maximize" else min
        best = pick(e["levels"], key=lambda lv: lv["mean"])["value"]
        held = f"Holm p {e['p_adjusted']:.2g}"
        state = f"decided ({held} < {alpha:.2g})" if e["significant"] else f"not decided ({held}, needs < {alpha:.2g})"
        parts.append(
            f"{e['term'].replace(prefix, '')}: best {best}, {_size(e['effect'], unit)} between levels, {state}"
        )
    interact = _interactions([e for e in effects if e["p_value"] is not None and len(e["factors"]) > 1], prefix, unit)
    return [f"- Over all variants (main effects, seeds as blocks): {'; '.join(parts)}{interact}."]


def _interactions(pairs: list[dict], prefix: str, unit: str) -> str:
    """'; interactions: image_pooling × norm decided (...)' or the largest one not decided, or ''."""
    decided = [e for e in pairs if e["significant"]]

    def name(e: dict) -> str:
        return e["term"].replace(prefix, "")

    if decided:
        return "; decided interactions (a setting's effect depends on another's): " + ", ".join(map(name, decided))
    if not pairs:
        return ""
    top = max(pairs, key=lambda e: e["effect"])
    held = f"{_size(top['effect'], unit)}, Holm p {top['p_adjusted']:.2g}"
    return f"; no interaction decided (the largest, {name(top)}, {held})"


def _size(effect: float, unit: str) -> str:
    """'17.5 points', or '0.0312 in val_loss' for a metric in its own units."""
    return f"{effect:.1f} points" if unit == "points" else f"{effect:.4g} in {unit}"
