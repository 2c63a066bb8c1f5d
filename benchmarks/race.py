"""Racing (`--race`) against the full grid with fixed seeds and against the median pruner on the first seed.

    python benchmarks/race.py [--reps 1000] [--no-moderation] [--out benchmarks/results/race.json]

No training: each variant's value on a seed is drawn as in `benchmarks/until_decided.py` (normal, or bimodal like
the built-in data: a run learns the scene or stays near 0.40; plus a shift each seed gives every variant). Per
scenario and repetition, on the same draws:
- race: every variant of the grid runs the planned seeds; then looks and rounds as `--race` takes them (those the
  seed-blocked t of the field decides worse than the leader out for good, its variances moderated unless
  --no-moderation, at its α per look; the paired verdicts for the rest, `plan_race`, up to max_seeds); the pick
  is the leader;
- fixed: every variant K seeds, the pick the best mean (K = max_seeds is the "full grid x fixed seeds" the goal
  is measured against; the smallest K that picks as well as the race is shown too);
- pruner: every variant the planned seeds, Optuna's MedianPruner as a sweep configures it (`pruner: median`)
  watching the first seed's curve, the pick the best complete trial; its runs are the epochs trained over the
  epochs of a run. A curve rises from 0.30 to the run's value by epoch 3, or, for a late-learning variant, jumps
  there after epoch 7 (the built-in data learns the scene late), of 12 epochs.
A pick is right when its true mean is within the margin of the best true mean. The paired verdicts are the array
ones of until_decided.py, the eliminations `ablate.study.race.eliminate`'s; the first `--check` repetitions also
take every look through `ablate.study.race.look` and must eliminate exactly the same variants.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import optuna

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import until_decided  # noqa: E402
from until_decided import ALPHA, GRID, VERDICTS, Scenario, bimodal, decide, draw, normal, save  # noqa: E402

from ablate.study.decide import first_look, look_alpha  # noqa: E402
from ablate.study.race import eliminate, look, plan_race  # noqa: E402

EPOCHS = 12


@dataclass
class RaceScenario(Scenario):
    late: tuple = ()  # variants whose runs learn late (their curve jumps after epoch 7)


def rates_grid(late: bool = False) -> dict:
    """24 rate sets: 3 within a point of the best, 6 one to three points below, 15 three to ten below."""
    rng = np.random.default_rng(24)
    means = [0.730, 0.725, 0.722, *rng.uniform(0.700, 0.720, 6), *rng.uniform(0.630, 0.700, 15)]
    return {f"rates{i:02d}": normal(float(m), 0.015) for i, m in enumerate(means)}


SCENARIOS = [
    RaceScenario(
        "rates_24",
        "24 rate sets, 1.5 points of run noise and 1 point a seed shares: 3 within the margin of the best",
        rates_grid(),
        None,
        1.0,
        2,
        8,
        0.01,
    ),
    RaceScenario(
        "rates_24_late",
        "the same, but the 3 best learn late (their curves jump after epoch 7): the pruner's blind spot",
        rates_grid(),
        None,
        1.0,
        2,
        8,
        0.01,
        late=("rates00", "rates01", "rates02"),
    ),
    RaceScenario(
        "default_2x2x2",
        "until_decided.py's default grid: without image pooling bimodal (learns the scene with p 0.4), BN +3",
        GRID,
        None,
        1.0,
        2,
        8,
    ),
    RaceScenario(
        "bimodal_traps",
        "the best learns the scene on 95 % of seeds (0.72, else 0.40); 4 rivals 1-3 points below; 3 traps "
        "learn it rarely (p 0.35) but higher (0.76), so two lucky seeds make one look best",
        {
            "full": bimodal(0.95, 0.72, 0.40, 0.02),
            **{f"rival{i}": normal(0.72 - d / 100, 0.02) for i, d in enumerate((1.5, 2, 2.5, 3))},
            **{f"trap{i}": bimodal(0.35, 0.76, 0.40, 0.02) for i in range(3)},
        },
        None,
        1.0,
        2,
        8,
    ),
]


def truth_ok(s: Scenario) -> np.ndarray:
    """(variants,) True where a variant's true mean is within the margin of the best's."""
    truth = np.array([s.truth(v) for v in s.variants])
    return truth >= truth.max() - s.margin / 100


def race(s: Scenario, values: np.ndarray, check: bool = False) -> tuple[int, int, int]:
    """One repetition of --race on (variants, seeds) values: (the pick's index, runs, looks)."""
    moderate = until_decided.MODERATE  # decide() reads it too
    names = list(s.variants)
    alpha = look_alpha(ALPHA, first_look(s.seeds), s.max_seeds, len(names) - 1, moderated=moderate, blocked=True)
    used, out, looks = {v: set(range(s.seeds)) for v in names}, set(), 0
    while True:
        looks += 1
        field = [
            {"variant": v, "seeds": {str(k): float(values[i, k]) for k in sorted(used[v])}}
            for i, v in enumerate(names)
            if v not in out
        ]
        codes, b, within = decide(s, field, alpha, check, difference=False)  # paired verdicts, TOST's estimate
        worse = eliminate(field, field[b], alpha=alpha, direction="maximize", moderate=moderate)
        for r, c, ok in zip(field, codes, within):
            paired = "undecided" if VERDICTS[c] == "worse" else VERDICTS[c]  # only eliminate() puts a row out
            r["verdict"] = "baseline" if r is field[b] else "worse" if r["variant"] in worse else paired
            blocked = r.get("race_seeds_needed")  # the seed-blocked t's estimate; TOST's none for a paired "worse"
            reach = blocked is None or blocked <= s.max_seeds or (ok and VERDICTS[c] != "worse")
            r["seeds_needed"] = s.max_seeds if reach else s.max_seeds + 1  # only "within max_seeds or not" matters
        if check:  # the library's look eliminates the same and leaves the same rows open
            rows = [{**r, "mean": float(np.mean(list(r["seeds"].values())))} for r in field]
            got = look(rows, set(), margin=s.margin, alpha=alpha, direction="maximize", moderate=moderate)[2]
            assert got == worse, (s.name, rows)
            is_open = [r["verdict"] == "undecided" and (r["seeds_needed"] or 0) <= s.max_seeds for r in rows]
            want = [r["verdict"] == "undecided" and r["seeds_needed"] <= s.max_seeds for r in field]
            assert is_open == want, (s.name, rows)
        out.update(worse)
        plan = plan_race([r for r in field if r["variant"] not in out], field[b], used, s.max_seeds)
        if not plan:
            return names.index(field[b]["variant"]), sum(map(len, used.values())), looks
        for v, seeds in plan.items():
            used[v].update(seeds)


def curve(final: np.ndarray, late: bool, rng: np.random.Generator) -> np.ndarray:
    """(..., EPOCHS) validation values rising from 0.30 to `final` (by epoch 3, or after epoch 7 when late), with
    epoch-to-epoch noise of 2 points until the run has learned."""
    e = np.arange(EPOCHS)
    share = 1 / (1 + np.exp(-(e - 8.5) * 2)) if late else np.minimum(1, (e + 1) / 4)
    noise = rng.normal(0, 0.02, (*final.shape, EPOCHS)) * (1 - share)
    return 0.30 + (final[..., None] - 0.30) * share + noise


def pruned_grid(s: RaceScenario, values: np.ndarray, rng: np.random.Generator) -> tuple[int, float]:
    """The grid in a random order, the planned seeds each, MedianPruner on the first seed: (pick, runs in
    epochs / EPOCHS)."""
    study = optuna.create_study(
        direction="maximize", pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    )  # as ablate.study.storage builds `pruner: median`
    names, epochs, best = list(s.variants), 0, (-np.inf, 0)
    for i in rng.permutation(len(names)):
        trial, values_i = study.ask(), curve(values[i, : s.seeds], names[i] in s.late, rng)
        for e, x in enumerate(values_i[0]):
            trial.report(float(x), e)
            if trial.should_prune():
                break
        epochs += e + 1
        if e + 1 < EPOCHS:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        epochs += EPOCHS * (s.seeds - 1)
        value = float(values_i.max(-1).mean())  # each seed's best epoch, as a trial's value
        study.tell(trial, value)
        best = max(best, (value, i))
    return best[1], epochs / EPOCHS


def run(s: RaceScenario, reps: int, check: int, rng: np.random.Generator) -> dict:
    """Race, fixed designs and the pruner on one scenario, on the same draws."""
    started, ok, g = time.time(), truth_ok(s), len(s.variants)
    values = draw(s, reps, s.max_seeds, rng)
    raced = [race(s, values[r], check=r < check) for r in range(reps)]
    pruned = [pruned_grid(s, values[r], rng) for r in range(reps)]
    fixed = [
        {"seeds": k, "runs": k * g, "right": float(ok[values[..., :k].mean(-1).argmax(-1)].mean())}
        for k in range(1, s.max_seeds + 1)
    ]
    right = float(np.mean([ok[p] for p, _, _ in raced]))
    full = g * s.max_seeds
    return {
        "race": {
            "right": right,
            "runs": float(np.mean([n for _, n, _ in raced])),
            "looks": float(np.mean([k for _, _, k in raced])),
            "ratio": float(np.mean([n for _, n, _ in raced]) / full),
        },
        "pruner": {
            "right": float(np.mean([ok[p] for p, _ in pruned])),
            "runs": float(np.mean([n for _, n in pruned])),
            "ratio": float(np.mean([n for _, n in pruned]) / full),
        },
        "fixed": fixed,
        "matched_seeds": next(
            (f["seeds"] for f in fixed if f["right"] >= right - 2 * np.sqrt(right * (1 - right) / reps)), None
        ),
        "full_grid_runs": full,
        "seconds": time.time() - started,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=1000)
    p.add_argument("--check", type=int, default=5, help="repetitions whose looks also go through ablate.study.race")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the results as JSON here")
    p.add_argument("--no-moderation", action="store_true", help="the plain paired t of every row, as before")
    args = p.parse_args()
    until_decided.MODERATE = not args.no_moderation
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rng, started, results = np.random.default_rng(args.seed), time.time(), {}
    for s in SCENARIOS:
        r = results[s.name] = {"scenario": asdict(s), **run(s, args.reps, args.check, rng)}
        a, pr, full = r["race"], r["pruner"], r["full_grid_runs"]
        print(
            f"{s.name} ({len(s.variants)} variants, {s.seeds} planned seeds, max {s.max_seeds}) [{r['seconds']:.0f} s]"
        )
        print(
            f"  race: right {a['right']:.3f} with {a['runs']:.1f} runs ({a['looks']:.1f} looks) = {a['ratio']:.2f} "
            f"of the full grid x {s.max_seeds} seeds ({full} runs, right {r['fixed'][-1]['right']:.3f}); "
            f"a fixed design as right needs {r['matched_seeds']} seeds a variant"
        )
        print(
            f"  median pruner, {s.seeds} seeds: right {pr['right']:.3f} with {pr['runs']:.1f} runs = {pr['ratio']:.2f}"
        )
    worst = min(r["race"]["right"] for r in results.values())
    ratios = [r["race"]["ratio"] for r in results.values()]
    print(
        f"race picks within the margin of the best in {worst:.3f} or more of the studies (goal >= 0.95) with "
        f"{min(ratios):.2f}-{max(ratios):.2f} of the full grid's runs (goal <= 0.4). {args.reps} repetitions a "
        f"scenario, {time.time() - started:.0f} s"
    )
    if args.out:
        save(args.out, args.reps, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
