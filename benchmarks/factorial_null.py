"""How often the main-effects-and-interactions table calls a term significant when no setting matters, and how
often it finds one real main effect: the table's own function (`ablate.stats.factorial.factorial_effects`)
against the rule it replaced.

    python benchmarks/factorial_null.py [--reps 400] [--power-reps 100] [--jobs 1] [--permutations 999]
        [--out benchmarks/results/factorial_null.json]

No training: a 2×2×2 study (norm × fusion × image pooling, as the default sweep) with 1, 2, 3, 5 or 8 seeds a
variant, every run's value drawn from a known distribution:
- normal: 0.70 ± 0.03 (the spread of our data's rows that always learn);
- bimodal: a run learns the scene with p 0.6 (0.75 ± 0.02) or stays near 0.40 ± 0.02, each run on its own (as
  `benchmarks/until_decided.py`'s null_bimodal);
- rare_failure: the same with p 0.9, so a study has a failed run or two (skewed, the hardest shape for few seeds).
Null studies: every variant the same distribution. A study "calls a term" when any term is significant:
- before: the rule the table used until now (OLS with pairwise interactions whenever they leave ≥ 1 residual
  df, type-II ANOVA F, any p < 0.05, no correction), re-implemented here;
- after: `factorial_effects(rows, alpha=0.05, permutations=P)`, any term with `significant` (Holm over the
  terms of the Freedman–Lane permutation p). `--permutations` only sets how many random permutations studies
  with 2+ seeds draw (the table draws 9999); a Monte Carlo p that counts the observed order is valid for any
  number, and one seed is enumerated exactly (8! orders) either way. Each study draws its own permutations
  (the `seed` argument): the rate over random draws, which the table's one fixed draw of 9999 approaches; one
  draw of 999 shared by every study would add that draw's own luck to every figure.
Power (1–16 seeds): the same studies with one real main effect of D points on `norm` (normal: its mean moves
D/2 points up at one level and down at the other; bimodal: its share of runs that learn moves by ±D/70 around
0.6, so the means differ by D points, as image pooling does on our data); the share of studies that call
`norm`, and the share that call any other term (false).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import multiprocessing
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ablate.stats.factorial import factorial_effects  # noqa: E402

SHAPES = {"normal": ("normal", 0.70, 0.03), "bimodal": ("bimodal", 0.6), "rare_failure": ("bimodal", 0.9)}
HIGH, LOW, MODE_SD = 0.75, 0.40, 0.02
SEEDS = (1, 2, 3, 5, 8)
POWER_SEEDS = (*SEEDS, 12, 16)  # bimodal runs need more seeds than the null's range to reach 80 %
EFFECTS = (5, 10, 18)  # points: like our data's BN (5), no-BN / sum (10?) and image pooling (18)
CELLS = list(itertools.product(("bn", "none"), ("concat", "sum"), ("true", "false")))


def draw(shape: str, seeds: int, rng: np.random.Generator, effect: float = 0.0) -> list[dict]:
    """One simulated 2×2×2 study's rows; `effect` points between norm=bn and norm=none (0: the null)."""
    rows = []
    for norm, fusion, pooling in CELLS:
        sign = 0.5 if norm == "bn" else -0.5
        kind, *p = SHAPES[shape]
        if kind == "normal":
            values = rng.normal(p[0] + sign * effect / 100, p[1], seeds)
        else:
            learns = rng.random(seeds) < p[0] + sign * effect / 100 / (HIGH - LOW)
            values = np.where(learns, HIGH, LOW) + rng.normal(0, MODE_SD, seeds)
        variant = f"model.neck.norm={norm} model.neck.fusion={fusion} model.neck.image_pooling={pooling}"
        rows.append({"variant": variant, "seeds": {str(s): float(v) for s, v in enumerate(values)}})
    return rows


def old_rule(rows: list[dict]) -> set[str]:
    """The terms the table called before this change: pairwise interactions whenever they leave ≥ 1 residual df,
    type-II ANOVA, p < 0.05 each, uncorrected (ablate.results.factorial._fit as of 2026-12-04)."""
    import pandas as pd
    import statsmodels.formula.api as smf
    from statsmodels.stats.anova import anova_lm

    data = pd.DataFrame(
        [{**dict(kv.split("=") for kv in r["variant"].split()), "y": v} for r in rows for v in r["seeds"].values()]
    ).rename(columns=lambda c: c.split(".")[-1])
    main = ["C(norm)", "C(fusion)", "C(image_pooling)"]
    for terms in (main + [f"{a}:{b}" for a, b in itertools.combinations(main, 2)], main):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = smf.ols("y ~ " + " + ".join(terms), data).fit()
        if np.linalg.matrix_rank(fit.model.exog) == fit.model.exog.shape[1] < fit.model.exog.shape[0]:
            anova = anova_lm(fit, typ=2).drop(index="Residual")
            return {t for t, p in anova["PR(>F)"].items() if p < 0.05}
    return set()


def new_rule(rows: list[dict], permutations: int, seed: int = 0) -> set[str]:
    """The terms the table calls now (significant after Holm), named as old_rule names them."""
    effects = factorial_effects(rows, alpha=0.05, permutations=permutations, seed=seed)
    called = [t for t in effects if t["significant"]]
    return {":".join(f"C({f.split('.')[-1]})" for f in t["factors"]) for t in called}


def simulate(task: tuple) -> dict:
    """Shares of `reps` studies (± their standard errors) that call any term / norm / a term other than norm."""
    shape, seeds, reps, effect, permutations, seed = task
    rng = np.random.default_rng(seed)
    counts = {f"{rule}_{what}": 0 for rule in ("before", "after") for what in ("any", "norm", "other")}
    for _ in range(reps):
        rows = draw(shape, seeds, rng, effect)
        after = new_rule(rows, permutations, int(rng.integers(2**32)))
        for rule, called in (("before", old_rule(rows)), ("after", after)):
            counts[f"{rule}_any"] += bool(called)
            counts[f"{rule}_norm"] += "C(norm)" in called
            counts[f"{rule}_other"] += bool(called - {"C(norm)"})
    out = {"shape": shape, "seeds": seeds, "effect_points": effect, "reps": reps}
    for key, count in counts.items():
        share = count / reps
        out[key] = round(share, 4)
        out[f"{key}_se"] = round(float(np.sqrt(share * (1 - share) / reps)), 4)
    return out


def start_worker() -> None:
    factorial_effects(draw("normal", 1, np.random.default_rng(0)))  # imports, and the 8! orders (cached)
    gc.freeze()  # statsmodels' Holm calls gc.collect(): keep it from walking every imported module each study


def report(results, n_null: int, n_power: int) -> tuple[list, list]:
    """Print each task's figures as they come (null first, then power) and return (null, power)."""
    null, power = [], []
    print("null: share of studies with any term called significant (before → after), ± standard error", flush=True)
    for _ in range(n_null):
        null.append(r := next(results))
        after = f"{r['after_any']:.3f} ± {r['after_any_se']:.3f}"
        print(f"  {r['shape']:13s} {r['seeds']} seed(s): {r['before_any']:.3f} → {after}", flush=True)
    print("power: share of studies that call the real main effect (after; before), and any other term (after)")
    for _ in range(n_power):
        power.append(r := next(results))
        print(
            f"  {r['effect_points']:2.0f} points {r['shape']:8s} {r['seeds']} seed(s): norm {r['after_norm']:.3f} "
            f"(before {r['before_norm']:.3f}); another term {r['after_other']:.3f}",
            flush=True,
        )
    return null, power


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=400, help="null studies per shape and seed count")
    parser.add_argument("--power-reps", type=int, default=100, help="studies per effect, shape and seed count")
    parser.add_argument("--permutations", type=int, default=999, help="random permutations a study (table: 9999)")
    parser.add_argument("--shapes", nargs="+", choices=list(SHAPES), default=list(SHAPES))
    parser.add_argument("--effects", nargs="+", type=int, default=list(EFFECTS), help="points of the real effect")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1, help="processes (the figures do not depend on it)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/factorial_null.json"))
    args = parser.parse_args(argv)
    start = time.time()
    null_tasks = [(shape, seeds, args.reps, 0.0) for shape, seeds in itertools.product(args.shapes, SEEDS)]
    power_tasks = [
        (shape, seeds, args.power_reps, effect)
        for effect, shape, seeds in itertools.product(args.effects, ("normal", "bimodal"), POWER_SEEDS)
    ]
    tasks = null_tasks + power_tasks
    seeds = np.random.SeedSequence(args.seed).generate_state(len(tasks))  # one stream a task: any --jobs, same figures
    with multiprocessing.Pool(args.jobs, initializer=start_worker) as pool:
        results = pool.imap(simulate, [(*t, args.permutations, int(s)) for t, s in zip(tasks, seeds)])
        null, power = report(results, len(null_tasks), len(power_tasks))
    for effect, shape in itertools.product(args.effects, ("normal", "bimodal")):
        called = [
            r["seeds"] for r in power if (r["effect_points"], r["shape"]) == (effect, shape) and r["after_norm"] >= 0.8
        ]
        least = min(called, default=f"> {POWER_SEEDS[-1]}")
        print(f"  {effect} points {shape}: called in ≥ 80 % of studies from {least} seeds")
    worst = max(r["after_any"] for r in null)
    print(f"worst null rate after: {worst:.3f} (goal ≤ 0.05); {time.time() - start:.0f} s")
    result = {
        "command": " ".join(["python benchmarks/factorial_null.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": f"{platform.machine()} {platform.processor()} (shared with other work)",
        "seconds": round(time.time() - start),
        "permutations": args.permutations,
        "jobs": args.jobs,
        "null": null,
        "power": power,
        "worst_null_after": worst,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
