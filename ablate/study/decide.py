"""Seeds where a comparison is still open (`--until-decided`): each variant's seeds, rounds of added seeds, and the
per-look α of tests repeated as seeds arrive (Pocock 1977, calibrated by simulation).

- Seeds belong to a variant: a seed a variant has run (or queued, or failed) is never run again for it. A trial
  trains the declared seeds its variant lacks, then the lowest unused integers (`choose_seeds`); its list is the
  trial's `seed_plan` user attr, chosen under the study's slot lock so two workers never pick the same one.
- A round adds one seed to every row still undecided against the baseline (the named one, else the best row) and
  below `max_seeds`, and to the baseline the seeds those rows will have, so every comparison stays paired
  (`plan_round`). Each added seed is one ordinary trial of the study, enqueued with the variant's parameters and
  user attrs `round`, `seed_plan`: resumable, W&B-named t{trial}-s{seed}, grouped by variant, in every table.
  Rounds are planned from what the storage holds, under the slot lock, once no trial runs or waits; such trials
  never count towards n_trials (`ablate.study.workers.counted`).
- Testing again after every round would inflate false verdicts, so every look uses one α per look (`look_alpha`):
  the level at which a paired t-test repeated at each seed count from the first look to max_seeds, with no true
  difference, rejects somewhere with probability α. The table of such a study uses it too.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import optuna
from optuna.trial import TrialState
from scipy import special

from ablate.cli import console
from ablate.errors import ConfigError
from ablate.results.moderated import moderate_paired

ROUND, PLAN = "round", "seed_plan"  # user attrs of a trial: its round of added seeds (absent: planned), its seeds
PATHS = 200_000  # simulated null paths for look_alpha: its Monte Carlo error is about ±0.0005 at α = 0.05
MODERATED_PATHS, MODERATED_ROWS = 10_000, 4  # null studies for the moderated look_alpha: 40 000 comparisons


@functools.lru_cache(maxsize=64)
def look_alpha(alpha: float, first: int, last: int, moderated: bool = True) -> float:
    """The α of each look when a comparison is tested at every seed count first..last (Pocock's constant rule).

    Calibrated under no true difference (a fixed random stream, so always the same number): the α-quantile of a
    comparison's smallest p-value over the looks. `moderated`: the moderated t (ablate.results.moderated) of
    MODERATED_ROWS rows sharing one baseline and one normal noise level, as the rows of a study do; else a single
    paired t on normal differences. One look (first >= last) keeps α itself.
    """
    first = max(first, 2)
    if first >= last:
        return alpha
    p = _moderated_null(first, last) if moderated else _paired_null(first, last)
    return float(np.quantile(p, alpha))


def _paired_null(first: int, last: int) -> np.ndarray:
    """(PATHS,) smallest p over the looks of a paired t on normal differences."""
    d = np.random.default_rng(20260101).standard_normal((PATHS, last))
    n = np.arange(1, last + 1)
    mean = np.cumsum(d, 1) / n
    var = (np.cumsum(d**2, 1) - n * mean**2)[:, first - 1 :] / (n[first - 1 :] - 1)
    t = np.abs(mean[:, first - 1 :]) / np.sqrt(var / n[first - 1 :])
    return (2 * special.stdtr(n[first - 1 :] - 1, -t)).min(axis=1)


def _moderated_null(first: int, last: int) -> np.ndarray:
    """(MODERATED_PATHS × MODERATED_ROWS,) smallest p over the looks of each row's moderated t: every row and the
    baseline normal with one sd, each row's differences to the shared baseline tested with the others' prior."""
    x = np.random.default_rng(20260101).standard_normal((MODERATED_PATHS, MODERATED_ROWS + 1, last))
    d = x[:, 1:] - x[:, :1]  # (paths, rows, seeds)
    smallest = np.ones(d.shape[:2])
    for n in range(first, last + 1):
        var, df, _ = moderate_paired(d[..., :n].var(-1, ddof=1), n)
        smallest = np.minimum(smallest, 2 * special.stdtr(df, -np.abs(d[..., :n].mean(-1)) / np.sqrt(var / n)))
    return smallest.ravel()


def first_look(planned: int) -> int:
    """The first look's paired seeds: the planned seeds per variant (a t-test needs 2)."""
    return max(2, planned)


def seeds_in_use(trials: list, skip: int | None = None) -> dict[str, set[int]]:
    """{variant: seeds it has run, runs, queued or failed} over `trials` (all states), except trial number `skip`."""
    used: dict[str, set[int]] = {}
    for t in trials:
        if "variant" in t.user_attrs and t.number != skip:
            seeds = t.user_attrs.get(PLAN, t.user_attrs.get("seeds", []))
            used.setdefault(t.user_attrs["variant"], set()).update(int(s) for s in seeds)
    return used


def choose_seeds(declared, used: set[int], count: int) -> list[int]:
    """`count` seeds a variant has not used: the declared ones first, in order, then the lowest unused integers."""
    out = [s for s in declared if s not in used][:count]
    s = 0
    while len(out) < count:
        if s not in used and s not in out:
            out.append(s)
        s += 1
    return out


def seeds_for(trial: optuna.Trial, variant: str, declared: tuple, lock) -> list[int]:
    """A trial's seeds: its `seed_plan` (an added seed, or a trial run again), else `len(declared)` seeds its variant
    has not used, chosen and recorded under `lock` (the study's slot lock) so that no two trials share one."""
    if PLAN in trial.user_attrs:
        return list(trial.user_attrs[PLAN])
    with lock():
        used = seeds_in_use(trial.study.get_trials(deepcopy=False), skip=trial.number).get(variant, set())
        seeds = choose_seeds(declared, used, len(declared))
        trial.set_user_attr(PLAN, seeds)
    return seeds


def plan_round(
    rows: list[dict], base: dict, used: dict[str, set[int]], max_seeds: int, futility: bool = True
) -> dict[str, list[int]]:
    """{variant: seeds to add} for one round; {} when every comparison is decided or has its max_seeds.

    `rows` carry verdicts against `base` (ablate.results.stats.annotate). An open row (undecided, with a complete
    seed, fewer than max_seeds used, and seeds_needed unknown or at most max_seeds) gets one seed: the lowest the
    baseline has and it lacks, else its lowest unused. The baseline gets the seeds of the open rows it lacks (lowest
    first, up to max_seeds), so they pair.
    `futility` False: every undecided row is open, whatever its estimate (benchmarks/until_decided.py compares).
    """
    plan, have = {}, {}
    for r in rows:
        v = r["variant"]
        taken = used.get(v, set())
        if r is base or r.get("verdict") != "undecided" or not r["seeds"] or len(taken) >= max_seeds:
            continue
        if futility and (r.get("seeds_needed") or 0) > max_seeds:  # its estimate: max_seeds would not decide it
            continue
        paired = sorted(int(s) for s in base["seeds"] if int(s) not in taken)
        plan[v] = [paired[0] if paired else choose_seeds((), taken, 1)[0]]
        have[v] = {int(s) for s in r["seeds"]} | set(plan[v])
    base_used = used.get(base["variant"], set())
    missing = sorted(set().union(*have.values()) - base_used) if have else []
    if missing[: max_seeds - len(base_used)]:
        plan[base["variant"]] = missing[: max_seeds - len(base_used)]
    return plan


def with_verdict_flags(study_config, args):
    """The StudyConfig with --margin, --alpha, --until-decided, --race, --max-seeds and --no-moderation applied
    (checked by validate_sweep)."""
    flags = {k: getattr(args, k, None) for k in ("margin", "alpha", "max_seeds")}
    flags = {k: v for k, v in flags.items() if v is not None}
    flags.update({k: True for k in ("until_decided", "race") if getattr(args, k, False)})
    if getattr(args, "no_moderation", False):
        flags["moderate"] = False
    return dataclasses.replace(study_config, **flags)


def verdict_attrs(sweep, stored: dict | None) -> dict:
    """What the study's tables decide with (stored as the study's `verdicts` user attr): margin, α, the baseline
    row's settings, whether it races, whether rows are moderated, and α per look once the study has added seeds
    until decided or raced (kept from `stored` otherwise)."""
    s, stored = sweep.study, stored or {}
    attrs = {
        "margin": s.margin,
        "alpha": s.alpha,
        "moderate": s.moderate,
        "baseline": sweep.baseline,
        "look_alpha": stored.get("look_alpha"),
        "look_alpha_plain": stored.get("look_alpha_plain"),
        "looks": stored.get("looks"),
        "race": s.race or stored.get("race", False),  # ablate.study.race
    }
    if s.until_decided or s.race:
        looks = [first_look(len(sweep.seeds)), s.max_seeds]
        attrs.update(look_alpha=look_alpha(s.alpha, *looks, s.moderate), looks=looks)
        attrs["look_alpha_plain"] = look_alpha(s.alpha, *looks, False)  # a table with --no-moderation
    return attrs


def check_max_seeds(trials: list, max_seeds: int, planned: int) -> None:
    """--max-seeds below the planned seeds, or below the seeds a variant has already run: a ConfigError."""
    if max_seeds < planned:
        raise ConfigError(
            f"--max-seeds {max_seeds} is below the {planned} seeds every trial runs (--seeds); "
            f"give --max-seeds {planned} or more"
        )
    done = seeds_in_use([t for t in trials if t.state == TrialState.COMPLETE])
    over = {v: sorted(s) for v, s in done.items() if len(s) > max_seeds}
    if over:
        variant, seeds = max(over.items(), key=lambda kv: len(kv[1]))
        raise ConfigError(
            f"--max-seeds {max_seeds} is below the seeds already run: {variant} has {len(seeds)} "
            f"({', '.join(map(str, seeds))}); give --max-seeds {len(seeds)} or more (nothing was run "
            "or changed)"
        )


def variant_params(trials: list) -> dict:
    """{variant: the params of a complete trial of it}: what an added seed's trial is enqueued with."""
    return {
        t.user_attrs["variant"]: t.params
        for t in trials
        if t.state == TrialState.COMPLETE and "variant" in t.user_attrs
    }


class Rounds:
    """Plans and enqueues the next round of added seeds; called by `Slots.claim` under the slot lock."""

    name = "seeds until decided"  # what run_study says comes after the planned trials (ablate.study.race: a race)

    def __init__(self, sweep):
        self.sweep = sweep
        s = sweep.study
        self.alpha = look_alpha(s.alpha, first_look(len(sweep.seeds)), s.max_seeds, s.moderate)

    def __str__(self) -> str:
        plain = "" if self.sweep.study.moderate else ", plain t (no moderation)"
        return f"at most {self.sweep.study.max_seeds} a variant, α per look {self.alpha:.4g}{plain}"

    def plan(self, study: optuna.Study, trials: list) -> tuple[dict, dict]:
        """({variant: seeds to add}, {variant: a complete trial's params}) from the stored trials."""
        from ablate.results.rows import add_deltas, study_objective, study_rows

        rows = study_rows(trials, None, *study_objective(study))
        if not any(r["mean"] is not None for r in rows):
            return {}, {}
        try:
            base = add_deltas(
                rows,
                self.sweep.baseline,
                margin=self.sweep.study.margin,
                alpha=self.alpha,
                direction=study.direction.name.lower(),
                moderate=self.sweep.study.moderate,
            )
        except ConfigError as e:
            console.print(f"--until-decided stops: {e}")
            return {}, {}
        return plan_round(rows, base, seeds_in_use(trials), self.sweep.study.max_seeds), variant_params(trials)

    def pending(self, study: optuna.Study) -> bool:
        """True when a trial waits or a round would add seeds now."""
        trials = study.get_trials(deepcopy=False)
        return any(t.state == TrialState.WAITING for t in trials) or bool(self.plan(study, trials)[0])

    def __call__(self, study: optuna.Study, trials: list) -> bool:
        """Enqueue the next round when no trial runs; True when it enqueued one."""
        if any(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in trials):
            return False
        plan, params = self.plan(study, trials)
        number = 1 + max((t.user_attrs.get(ROUND, 0) for t in trials), default=0)
        for variant, seeds in plan.items():
            for seed in seeds:
                study.enqueue_trial(params[variant], user_attrs={ROUND: number, PLAN: [seed], "variant": variant})
        if plan:
            runs = sum(map(len, plan.values()))
            console.print(
                f"round {number} of added seeds: {runs} run(s) for {len(plan)} variant(s) not yet decided "
                f"(or their baseline); α per look {self.alpha:.4g}"
            )
        return bool(plan)
