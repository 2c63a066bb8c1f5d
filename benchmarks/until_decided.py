"""Runs spent by `--until-decided` against a fixed number of seeds per variant that reaches the same verdicts.

    python benchmarks/until_decided.py [--reps 2000] [--out benchmarks/results/until_decided.json]

No training: each variant's value on a seed is drawn from a known distribution (normal, or bimodal like the
built-in data, where a run learns the scene or stays near 0.40), plus a per-seed shift every variant shares (a
seed fixes data order). Per scenario and repetition:
- adaptive: `--until-decided` as the sweep runs it: the planned seeds, then rounds of `ablate.study.decide.plan_round`
  (one seed more for each undecided row, the baseline's seeds to pair them) at `look_alpha` until every verdict is
  decided or `max_seeds` is reached;
- fixed: every variant N seeds, one look at α, for N = 2, 3, ...
A verdict is false when the truth contradicts it (better with a true Δ ≤ 0, worse with Δ ≥ 0, equivalent with
|Δ| ≥ margin). The fixed design that "reaches the same verdicts" is the smallest N at which every row is decided
correctly at least as often as by the adaptive design (less two standard errors of the difference: Monte Carlo
noise); the ratio is the adaptive design's mean runs over that design's runs.
Any design that first runs the planned seeds spends at least seeds × variants runs, so its ratio is at least
that over the matched design's runs ("the planned seeds alone"): a ratio of 0.5 needs a matched fixed design of
twice the planned seeds or more, reached with almost no added runs.
The verdicts are computed here on arrays (paired t, Holm, TOST), the same as `ablate.stats.verdicts.annotate`; the
first `--check` repetitions of every scenario are also decided by `annotate` itself and must agree exactly.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import special

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ablate.stats.moderated import moderate_paired  # noqa: E402
from ablate.stats.verdicts import annotate  # noqa: E402
from ablate.study.decide import first_look, look_alpha, plan_round  # noqa: E402

ALPHA = 0.05
MODERATE = True  # --no-moderation: the plain paired t, as before the moderated t
VERDICTS = ("undecided", "better", "worse", "equivalent")


@dataclass
class Scenario:
    """Variants as {name: (kind, *parameters)}: ("normal", mean, sd) or ("bimodal", p_learn, high, low, sd)."""

    name: str
    about: str
    variants: dict
    baseline: str | None  # None: the best row, as the table does without --baseline
    margin: float | None
    seeds: int  # planned seeds per variant
    max_seeds: int
    seed_sd: float = 0.0  # the per-seed shift all variants share

    def truth(self, variant: str) -> float:
        """The variant's expected value."""
        kind, *p = self.variants[variant]
        return p[0] if kind == "normal" else p[0] * p[1] + (1 - p[0]) * p[2]


def normal(mean: float, sd: float) -> tuple:
    return ("normal", mean, sd)


def bimodal(p_learn: float, high: float, low: float, sd: float) -> tuple:
    return ("bimodal", p_learn, high, low, sd)


def copies(truth: tuple, names: str = "base a b c d e f") -> dict:
    return dict.fromkeys(names.split(), truth)


ASPP = {
    "full": bimodal(0.95, 0.72, 0.40, 0.02),
    "identity": normal(0.36, 0.012),
    "no_image_pooling": bimodal(0.35, 0.76, 0.40, 0.02),
    "no_bn": bimodal(0.80, 0.71, 0.45, 0.03),
    "sum_fusion": normal(0.75, 0.03),
    "rates_2-4-6-8": normal(0.745, 0.03),
    "ppm": normal(0.767, 0.03),
}
GRID = {
    f"rates={r} norm={n} pool={p}": normal(0.70 + 0.03 * (n == "bn"), 0.015)
    if p == "true"
    else bimodal(0.4, 0.72 + 0.03 * (n == "bn"), 0.40, 0.02)
    for r in ("1,2,3", "2,4,6")
    for n in ("bn", "none")
    for p in ("true", "false")
}
GRADED = {
    "base": normal(0.70, 0.015),
    **{f"d{d:+g}": normal(0.70 + d / 100, 0.015) for d in (-16, -8, -4, 3, -2, 0.25)},
    "d0": normal(0.70, 0.015),
}
SCENARIOS = [
    Scenario(
        "aspp_components",
        "experiments/aspp_components.yaml as the built-in data behaves: identity far below, "
        "no image pooling bimodal (most runs never learn the scene), no BN failing on some seeds, sum, rates and "
        "PPM a few points above; baseline the full ASPP",
        ASPP,
        "full",
        1.0,
        3,
        8,
    ),
    Scenario(
        "default_2x2x2",
        "the default sweep's kind of truth, compared with the best row (no --baseline): "
        "without image pooling bimodal, BN +3 points, the rates nothing",
        GRID,
        None,
        1.0,
        3,
        8,
    ),
    Scenario(
        "graded",
        "settings from decisive to negligible (Δ -16 ... 0 points), 1.5 points of run noise and 1 "
        "point shared by a seed, margin 1 point",
        GRADED,
        "base",
        1.0,
        3,
        12,
        0.01,
    ),
    Scenario(
        "null_normal",
        "no setting matters: six copies of the baseline, no margin; every better/worse verdict is false",
        copies(normal(0.70, 0.02)),
        "base",
        None,
        3,
        8,
    ),
    Scenario(
        "null_bimodal",
        "no setting matters, every run bimodal like the data (learns the scene with p 0.6): "
        "six copies of the baseline, no margin",
        copies(bimodal(0.6, 0.75, 0.40, 0.02)),
        "base",
        None,
        3,
        8,
    ),
    Scenario(
        "at_the_margin",
        "every row exactly one margin (1 point) away: every equivalent verdict is false",
        {
            "base": normal(0.70, 0.01),
            **copies(normal(0.71, 0.01), "up up2"),
            **copies(normal(0.69, 0.01), "down down2"),
        },
        "base",
        1.0,
        3,
        12,
    ),
    Scenario(
        "rare_failure",
        "the limit of any test on a few seeds: rows 2 points better on 9 seeds of 10 and 18 "
        "points worse on the tenth, so their mean equals the baseline's; a better verdict is false",
        {"base": normal(0.70, 0.02), **copies(bimodal(0.9, 0.72, 0.52, 0.02), "a b c")},
        "base",
        None,
        3,
        8,
    ),
]


def draw(s: Scenario, reps: int, seeds: int, rng: np.random.Generator) -> np.ndarray:
    """(reps, variants, seeds) values: a variant's own draw plus the seed's shift shared by all variants."""
    out = np.empty((reps, len(s.variants), seeds))
    for i, (kind, *p) in enumerate(s.variants.values()):
        if kind == "normal":
            out[:, i] = rng.normal(p[0], p[1], (reps, seeds))
        else:
            out[:, i] = np.where(rng.random((reps, seeds)) < p[0], p[1], p[2]) + rng.normal(0, p[3], (reps, seeds))
    return out + rng.normal(0, s.seed_sd, (reps, 1, seeds))


def holm(p: np.ndarray) -> np.ndarray:
    """Holm-adjusted p along the last axis; NaN (not in the family) stays NaN."""
    order = np.argsort(p, axis=-1)  # NaN last
    ranked = np.take_along_axis(p, order, -1)
    m = np.sum(~np.isnan(p), axis=-1, keepdims=True)
    adjusted = np.fmax.accumulate(np.minimum(1, (m - np.arange(p.shape[-1])) * ranked), axis=-1)
    out = np.empty_like(p)
    np.put_along_axis(out, order, np.where(np.isnan(ranked), np.nan, adjusted), -1)
    return out


def spread(d: np.ndarray, n: np.ndarray, in_family: np.ndarray) -> tuple:
    """(mean, sd, df, d0) per row of paired differences `d` (..., rows, seeds), NaN past each row's `n` seeds: the
    moderated sd and df across the rows in the family (ablate.stats.moderated) unless MODERATE is off."""
    mean = np.nanmean(d, -1)
    var = np.nansum((d - mean[..., None]) ** 2, -1) / np.maximum(n - 1, 1)
    if not MODERATE:
        return mean, np.sqrt(var), np.maximum(n - 1, 1), np.zeros_like(var)
    var, df, d0 = moderate_paired(var, n, in_family & (n >= 2))
    return mean, np.sqrt(var), np.maximum(df, 1), d0


def verdicts(d: np.ndarray, n: np.ndarray, in_family: np.ndarray, margin, alpha: float, with_p: bool = False):
    """Verdict codes (index into VERDICTS) of paired differences in points: `d` (..., rows, seeds) with NaN past
    each row's `n` seeds; `in_family` masks the baseline out. Mirrors ablate.stats.verdicts (maximize)."""
    mean, sd, df, _ = spread(d, n, in_family)
    exact = sd == 0
    se = np.where(exact, 1, sd / np.sqrt(n))
    p = np.where(exact, (mean == 0).astype(float), 2 * special.stdtr(df, -np.abs(mean / se)))
    p = np.where(in_family & (n >= 2), p, np.nan)
    p_adj = holm(p)
    code = np.where(p_adj < alpha, np.where(mean > 0, 1, 2), 0)
    if margin is not None:
        p_eq = np.maximum(special.stdtr(df, -(mean + margin) / se), special.stdtr(df, (mean - margin) / se))
        p_eq = np.where(exact, (np.abs(mean) >= margin).astype(float), p_eq)
        code = np.where(in_family & (n >= 2) & (p_eq < alpha), 3, code)
    return (code, p_adj) if with_p else code


def decidable(
    d: np.ndarray, n: np.ndarray, p_adj: np.ndarray, margin, alpha: float, max_seeds: int, difference: bool = True
) -> np.ndarray:
    """Rows whose seeds-needed estimate (ablate.stats.verdicts.seeds_needed) is unknown or at most max_seeds: power
    >= 0.8 at some n <= max_seeds, at the observed Δ and sd, of the t-test at α / (rows Holm has not rejected) or
    of TOST at α (the same power functions as the library, a moderated row keeping its prior df). `difference`
    False: TOST's alone (a race's rows, ablate.study.race.versus_leader)."""
    from scipy import stats

    mean, sd, _, d0 = (a[:, None] for a in spread(d, n, ~np.isnan(p_adj)))
    family = max(1, int(np.sum(~np.isnan(p_adj) & (p_adj >= alpha))))
    k = np.arange(2, max_seeds + 1)[None]
    with np.errstate(divide="ignore", invalid="ignore"):
        effect, t = np.abs(mean) / sd, stats.t.isf(alpha / family / 2, k - 1 + d0)
        power = stats.nct.sf(t, k - 1 + d0, effect * np.sqrt(k))
        power += np.nan_to_num(stats.nct.cdf(-t, k - 1 + d0, effect * np.sqrt(k)))  # as the library: NaN is 0
        power = np.where((mean != 0) & difference, power, 0)
        if margin is not None:
            se, df = sd / np.sqrt(k), k - 1 + d0
            t = stats.t.ppf(1 - alpha, df)
            eq = stats.nct.sf(t, df, (margin - np.abs(mean)) / se) + stats.nct.sf(t, df, (margin + np.abs(mean)) / se)
            eq -= 1
            power = np.maximum(power, np.clip(eq, 0, 1))
    unknown = (n < 2) | (sd[:, 0] == 0) | ((mean[:, 0] == 0) & (margin is None) & difference)
    return unknown | ((power >= 0.8).any(-1) & (n + 1 <= max_seeds))


def baseline_index(s: Scenario, means: np.ndarray) -> np.ndarray:
    """The baseline row of each repetition: the named one, else the best mean."""
    if s.baseline is not None:
        return np.full(means.shape[:-1], list(s.variants).index(s.baseline))
    return np.argmax(means, -1)


def fixed(s: Scenario, values: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(verdict codes (reps, variants), baseline index (reps,)) of every variant run with n seeds, one look at α."""
    x = values[..., :n]
    base = baseline_index(s, x.mean(-1))
    d = 100 * (x - np.take_along_axis(x, base[:, None, None], 1))
    in_family = np.arange(x.shape[1])[None] != base[:, None]
    return verdicts(d, np.full(x.shape[:2], n), in_family, s.margin, ALPHA), base


def adaptive(s: Scenario, values: np.ndarray, futility: bool = True, check: bool = False) -> tuple:
    """One repetition of --until-decided: (verdict codes per variant, baseline index, runs, looks)."""
    names, alpha = (
        list(s.variants),
        look_alpha(ALPHA, first_look(s.seeds), s.max_seeds, len(s.variants) - 1, moderated=MODERATE),
    )
    used = {v: set(range(s.seeds)) for v in names}
    looks = 0
    while True:
        looks += 1
        rows = [
            {"variant": v, "seeds": {str(k): float(values[i, k]) for k in sorted(used[v])}} for i, v in enumerate(names)
        ]
        codes, b, within = decide(s, rows, alpha, check)
        for r, code, ok in zip(rows, codes, within):
            r["verdict"] = "baseline" if r is rows[b] else VERDICTS[code]
            r["seeds_needed"] = s.max_seeds if ok else s.max_seeds + 1  # only "within max_seeds or not" matters
        plan = plan_round(rows, rows[b], used, s.max_seeds, futility)
        if not plan:
            return codes, b, sum(map(len, used.values())), looks
        for v, seeds in plan.items():
            used[v].update(seeds)


def decide(
    s: Scenario, rows: list[dict], alpha: float, check: bool, difference: bool = True
) -> tuple[list[int], int, np.ndarray]:
    """Verdict codes, the baseline index of rows with any seeds (paired on the shared ones) and which rows are
    `decidable` (`difference` False: by TOST alone)."""
    means = np.array([np.mean(list(r["seeds"].values())) for r in rows])
    b = int(baseline_index(s, means[None])[0])
    base = rows[b]["seeds"]
    width = max(len(r["seeds"]) for r in rows)
    d, n = np.full((len(rows), width), np.nan), np.zeros(len(rows), int)
    for i, r in enumerate(rows):
        shared = [k for k in r["seeds"] if k in base]
        d[i, : len(shared)] = [100 * (r["seeds"][k] - base[k]) for k in shared]
        n[i] = len(shared)
    in_family = np.arange(len(rows)) != b
    codes, p_adj = verdicts(d, n, in_family, s.margin, alpha, with_p=True)
    within = decidable(d, n, p_adj, s.margin, alpha, s.max_seeds, difference)
    codes = codes.tolist()
    if check:  # the library decides the same
        copies = [dict(r) for r in rows]
        annotate(copies, copies[b], margin=s.margin, alpha=alpha, moderate=MODERATE, difference_needed=difference)
        got = [VERDICTS.index(r["verdict"]) if r["verdict"] != "baseline" else 0 for r in copies]
        assert got == codes, (s.name, got, codes, rows)
        got = [r["seeds_needed"] is None or r["seeds_needed"] <= s.max_seeds for r in copies]
        want = [w or c > 0 or i == b for i, (w, c) in enumerate(zip(within, codes))]
        assert [g or c > 0 or i == b for i, (g, c) in enumerate(zip(got, codes))] == want, (s.name, rows)
    return codes, b, within


def correct(s: Scenario, codes: np.ndarray, base: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(right, wrong) boolean (reps, variants): decided verdicts that the truth confirms or contradicts."""
    truth = np.array([s.truth(v) for v in s.variants])
    delta = 100 * (truth[None] - truth[base][:, None])
    margin = s.margin if s.margin is not None else 0.0
    ok = np.select([codes == 1, codes == 2, codes == 3], [delta > 0, delta < 0, np.abs(delta) < margin], False)
    return (codes > 0) & ok, (codes > 0) & ~ok


POLICIES = {"until_decided": True, "without_the_estimate_stop": False}  # plan_round's futility


def run(s: Scenario, reps: int, check: int, rng: np.random.Generator) -> dict:
    """Both adaptive policies and the fixed designs on one scenario, on the same draws."""
    started, largest = time.time(), 64
    values = draw(s, reps, largest, rng)
    for r in range(min(check, reps)):  # the fixed design's array verdicts against the library too
        fixed_check(s, values[r], s.seeds)
    fixed_rows, result = (
        [],
        {"look_alpha": look_alpha(ALPHA, first_look(s.seeds), s.max_seeds, len(s.variants) - 1, moderated=MODERATE)},
    )
    for name, futility in POLICIES.items():
        out = [adaptive(s, values[r], futility, check=r < check) for r in range(reps)]
        codes, base = np.array([o[0] for o in out]), np.array([o[1] for o in out])
        right, wrong = correct(s, codes, base)
        result[name] = {
            "runs": float(np.mean([o[2] for o in out])),
            "looks": float(np.mean([o[3] for o in out])),
            **rates(s, right, wrong),
            **match(s, right.mean(0), reps, values, fixed_rows),
        }
        m = result[name]
        m["ratio"] = m["runs"] / m["matched_runs"] if m["matched_runs"] else None
    result["fixed"], result["seconds"] = fixed_rows, time.time() - started
    return result


def match(s: Scenario, rate: np.ndarray, reps: int, values: np.ndarray, fixed_rows: list) -> dict:
    """The smallest fixed design deciding every row correctly at least as often as `rate` (less two standard
    errors of the difference), its runs and the ratio; none when no verdict of the scenario can be right."""
    if not rate.any():  # still the fixed designs' false rates, to compare with
        for n in range(2, s.max_seeds + 1):
            if len(fixed_rows) < n - 1:
                f_codes, f_base = fixed(s, values, n)
                fixed_rows.append({"seeds": n, "runs": n * len(s.variants), **rates(s, *correct(s, f_codes, f_base))})
        return {"matched_seeds": None, "matched_runs": None}
    for n in range(2, values.shape[-1] + 1):
        if len(fixed_rows) < n - 1:
            f_codes, f_base = fixed(s, values, n)
            f_right, f_wrong = correct(s, f_codes, f_base)
            fixed_rows.append({"seeds": n, "runs": n * len(s.variants), **rates(s, f_right, f_wrong)})
        f_rate = np.array(list(fixed_rows[n - 2]["right"].values()))
        if np.all(f_rate >= rate - 2 * np.sqrt((rate * (1 - rate) + f_rate * (1 - f_rate)) / reps)):
            return {
                "matched_seeds": n,
                "matched_runs": n * len(s.variants),
                "matched_false_per_comparison": fixed_rows[n - 2]["false_per_comparison"],
            }
    return {"matched_seeds": None, "matched_runs": None}


def fixed_check(s: Scenario, values: np.ndarray, n: int) -> None:
    rows = [{"variant": v, "seeds": {str(k): float(values[i, k]) for k in range(n)}} for i, v in enumerate(s.variants)]
    decide(s, rows, ALPHA, check=True)


def rates(s: Scenario, right: np.ndarray, wrong: np.ndarray) -> dict:
    """Per-variant right rate, the false-verdict rate per comparison and per study (any false verdict)."""
    comparisons = right.shape[0] * (right.shape[1] - 1)
    return {
        "right": dict(zip(s.variants, map(float, right.mean(0)))),
        "decided": float(right.sum() / comparisons + wrong.sum() / comparisons),
        "false_per_comparison": float(wrong.sum() / comparisons),
        "false_per_study": float(wrong.any(1).mean()),
    }


def line(s: Scenario, name: str, a: dict, fixed_rows: list) -> str:
    """One printed line of a policy's figures on a scenario."""
    if a["ratio"] is None:
        fixed = {f["seeds"]: f["false_per_comparison"] for f in fixed_rows}
        vs = (
            (
                f"no verdict can be right here; a fixed design's false rate: {fixed[s.seeds]:.4f} with {s.seeds} "
                f"seeds, {fixed[s.max_seeds]:.4f} with {s.max_seeds}"
            )
            if not any(a["right"].values())
            else "no fixed design up to 64 seeds matches"
        )
    else:
        vs = (
            f"fixed design: {a['matched_seeds']} seeds x {len(s.variants)} = {a['matched_runs']} runs "
            f"(false {a['matched_false_per_comparison']:.4f}); ratio {a['ratio']:.2f} (the planned seeds alone: "
            f"{s.seeds * len(s.variants) / a['matched_runs']:.2f})"
        )
    return (
        f"  {name}: {a['runs']:.1f} runs ({a['looks']:.1f} looks), decided {a['decided']:.3f}, false "
        f"{a['false_per_comparison']:.4f} a comparison / {a['false_per_study']:.3f} a study; {vs}"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=1000)
    p.add_argument("--check", type=int, default=5, help="repetitions also decided by ablate.stats.verdicts.annotate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-seeds", type=int, help="every scenario's max_seeds (default: each its own)")
    p.add_argument("--out", help="write the results as JSON here")
    p.add_argument("--no-moderation", action="store_true", help="the plain paired t of every row, as before")
    args = p.parse_args()
    global MODERATE
    MODERATE = not args.no_moderation
    rng, started, results = np.random.default_rng(args.seed), time.time(), {}
    for s in SCENARIOS:
        s.max_seeds = args.max_seeds or s.max_seeds
        r = results[s.name] = {"scenario": asdict(s), **run(s, args.reps, args.check, rng)}
        print(
            f"{s.name} ({len(s.variants)} variants, {s.seeds} planned seeds, max {s.max_seeds}, α per look "
            f"{r['look_alpha']:.4f}) [{r['seconds']:.0f} s]"
        )
        for name in POLICIES:
            print(line(s, name, r[name], r["fixed"]))
    ratios = [r["until_decided"]["ratio"] for r in results.values() if r["until_decided"]["ratio"]]
    worst = max(r["until_decided"]["false_per_comparison"] for r in results.values())
    print(
        f"until-decided spends {min(ratios):.2f}-{max(ratios):.2f} of the runs of the fixed design that reaches the "
        f"same verdicts (goal <= 0.5); false verdicts at most {worst:.4f} a comparison (goal <= 0.05). "
        f"{args.reps} repetitions a scenario, {time.time() - started:.0f} s"
    )
    if args.out:
        save(args.out, args.reps, results)
    return 0


def save(path: str, reps: int, results: dict) -> None:
    """The results as JSON at `path`, with the command that made them (benchmarks/race.py writes the same way)."""
    meta = {
        "command": " ".join(["python", *sys.argv]),
        "reps": reps,
        "alpha": ALPHA,
        "machine": platform.machine(),
        "python": platform.python_version(),
    }
    Path(path).write_text(json.dumps({"meta": meta, "scenarios": results}, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
