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
  the level at which a study of as many rows with no true difference, tested by Holm at each seed count from the
  first look to max_seeds, calls any row better or worse with probability α, whether its runs are normal or
  bimodal like the built-in data's. The table of such a study uses it too.
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
from ablate.stats.moderated import REWEIGHT, fit_prior, moderate_paired, squeeze, variant_weights

ROUND, PLAN = "round", "seed_plan"  # user attrs of a trial: its round of added seeds (absent: planned), its seeds
NULL_PATHS, NULL_SEED = 10_000, 20260101  # null studies simulated for look_alpha, on one fixed random stream
MODERATED_ROWS_CAP = 12  # moderated null studies of more rows are simulated with 12 (level flat from 6 on; cost ~rows²)
BIMODAL = (0.5, 17.5)  # the bimodal null: a run learns the scene with p 1/2, the modes 17.5 run sd apart (as our data)


@functools.lru_cache(maxsize=64)
def look_alpha(
    alpha: float, first: int, last: int, rows: int, *, moderated: bool = True, blocked: bool = False
) -> float:
    """The α of each look when a study's `rows` rows are tested against one baseline at every seed count
    first..last (Pocock's constant rule).

    Calibrated by simulation on null studies of that many rows (a fixed random stream, so always the same number):
    the rows and their baseline, all with one noise level, tested by Holm at every look, with the moderated t
    (ablate.stats.moderated) or, `moderated` False, each row's plain paired t. The noise is normal, or bimodal
    like the built-in data's runs (BIMODAL: a run learns the scene or not, and then the rows' differences share the
    baseline's luck on a few seeds, and each row can have its own); the α per look is the smaller of the two levels
    at which such a study makes any false verdict with probability α. More rows, more chances: with plain t's the
    level falls with every row (3..8 seeds: 0.0030 at 3 rows, 0.0010 at 11). One look (first >= last) keeps α.
    `blocked`: the race's seed-blocked t instead (ablate.stats.moderated.blocked_t, moderated unless `moderated`
    is False), the baseline one of the field's rows + 1 variants.
    """
    first = max(first, 2)
    if first >= last:
        return alpha
    rows = max(1, min(rows, MODERATED_ROWS_CAP) if moderated else rows)
    levels = (
        np.quantile(_null_study(first, last, moderated, shape, rows, blocked=blocked), alpha)
        for shape in ("normal", "bimodal")
    )
    return float(min(levels))


def _null_study(
    first: int, last: int, moderated: bool, shape: str, rows: int, seed: int = NULL_SEED, blocked: bool = False
) -> np.ndarray:
    """(NULL_PATHS,) Holm's first step over a null study's looks: `rows` × its smallest p over rows and looks,
    every run normal (`shape` "normal") or bimodal (BIMODAL), each row's differences to the shared baseline, or
    with `blocked` the seed-blocked t of each row against the baseline (`_blocked_p`)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((NULL_PATHS, rows + 1, last))
    if shape == "bimodal":
        x += np.where(rng.random(x.shape) < BIMODAL[0], BIMODAL[1], 0.0)
    d = x[:, 1:] - x[:, :1]  # (paths, rows, seeds)
    smallest = np.ones(len(d))
    for n in range(first, last + 1):
        if blocked:
            p = _blocked_p(x[..., :n], moderated)
        else:
            var, df = d[..., :n].var(-1, ddof=1), np.full(d.shape[:2], n - 1.0)
            if moderated:
                var, df, _ = moderate_paired(var, n)
            p = 2 * special.stdtr(df, -np.abs(d[..., :n].mean(-1)) / np.sqrt(var / n))
        smallest = np.minimum(smallest, p.min(-1))
    return rows * smallest


def _blocked_p(x: np.ndarray, moderated: bool) -> np.ndarray:
    """(paths, rows) p of `blocked_t` for x (paths, variants, seeds), every variant on every seed, variant 0 the
    baseline, in closed form: in a full table with variant weights w the residuals are x − its variant's mean − the
    w-weighted mean over variants of (x − their means) on its seed, each variant's on (n − 1)(1 − w / Σw) df, and
    the contrast is the difference of means (a Welch t)."""
    n = x.shape[-1]
    mean = x.mean(-1)
    centred = x - mean[..., None]
    weight = np.ones(mean.shape)
    for _ in range(REWEIGHT + 1):
        share = weight / weight.sum(-1, keepdims=True)
        residual = centred - np.einsum("pv,pvs->ps", share, centred)[:, None]
        df = (n - 1) * (1 - share)
        var = (residual**2).sum(-1) / df
        d0, s0, _ = fit_prior(var, df, True, shared=0.0)
        weight = variant_weights(squeeze(var, df, d0, s0))
    if moderated:
        var, df = squeeze(var, df, d0, s0), df + d0
    se2 = (var[:, :1] + var[:, 1:]) / n
    df_t = se2**2 / ((var[:, :1] / n) ** 2 / df[:, :1] + (var[:, 1:] / n) ** 2 / df[:, 1:])
    return 2 * special.stdtr(df_t, -np.abs(mean[:, 1:] - mean[:, :1]) / np.sqrt(se2))


def planned_rows(sweep) -> int:
    """The rows a study's tables compare with its baseline: its variants (n_trials, each one variant) less one."""
    return max(1, sweep.n_trials - 1)


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


def seeds_for(trial: optuna.Trial, variant: str, declared: tuple, locked) -> list[int]:
    """A trial's seeds: its `seed_plan` (an added seed, or a trial run again), else `len(declared)` seeds its variant
    has not used, chosen and recorded under the study's slot lock (`locked`: `Slots.locked`, which waits out a
    storage outage) so that no two trials share one."""
    if PLAN in trial.user_attrs:
        return list(trial.user_attrs[PLAN])

    def choose(check) -> list[int]:
        used = seeds_in_use(trial.study.get_trials(deepcopy=False), skip=trial.number).get(variant, set())
        seeds = choose_seeds(declared, used, len(declared))
        check()
        trial.set_user_attr(PLAN, seeds)
        return seeds

    return locked(choose)


def plan_round(
    rows: list[dict], base: dict, used: dict[str, set[int]], max_seeds: int, futility: bool = True
) -> dict[str, list[int]]:
    """{variant: seeds to add} for one round; {} when every comparison is decided or has its max_seeds.

    `rows` carry verdicts against `base` (ablate.stats.verdicts.annotate). An open row (undecided, with a complete
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
    row's settings, whether it races, whether rows are moderated, and α per look (with the looks and the rows it is
    calibrated for) once the study has added seeds until decided or raced (kept from `stored` otherwise); a race's
    eliminations have their own (`race_alpha`, ablate.study.race)."""
    s, stored = sweep.study, stored or {}
    attrs = {
        "margin": s.margin,
        "alpha": s.alpha,
        "moderate": s.moderate,
        "baseline": sweep.baseline,
        "look_alpha": stored.get("look_alpha"),
        "look_alpha_plain": stored.get("look_alpha_plain"),
        "looks": stored.get("looks"),
        "rows": stored.get("rows"),
        "race": s.race or stored.get("race", False),  # ablate.study.race
    }
    if s.until_decided or s.race:
        looks = [first_look(len(sweep.seeds)), s.max_seeds]
        rows = planned_rows(sweep)
        attrs.update(look_alpha=look_alpha(s.alpha, *looks, rows, moderated=s.moderate), looks=looks, rows=rows)
        attrs["look_alpha_plain"] = look_alpha(s.alpha, *looks, rows, moderated=False)  # a table with --no-moderation
    if attrs["race"]:
        attrs["race_alpha"] = race_alpha(sweep) if s.race else stored.get("race_alpha")
    return attrs


def race_alpha(sweep) -> float:
    """The α per look of a race's eliminations: the seed-blocked t's (moderated unless study.moderate is false),
    calibrated on null studies of the sweep's rows (`look_alpha`)."""
    s = sweep.study
    rows = planned_rows(sweep)
    return look_alpha(s.alpha, first_look(len(sweep.seeds)), s.max_seeds, rows, moderated=s.moderate, blocked=True)


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
        self.alpha = look_alpha(
            s.alpha, first_look(len(sweep.seeds)), s.max_seeds, planned_rows(sweep), moderated=s.moderate
        )

    def __str__(self) -> str:
        plain = "" if self.sweep.study.moderate else ", plain t (no moderation)"
        s = self.sweep.study
        return (
            f"at most {s.max_seeds} a variant; a verdict needs Holm p < {self.alpha:.2g}, the α {s.alpha:g} spread "
            f"over the looks, so that looking again after each round keeps false verdicts at {s.alpha:g}{plain}"
        )

    def plan(self, study: optuna.Study, trials: list) -> tuple[dict, dict]:
        """({variant: seeds to add}, {variant: a complete trial's params}) from the stored trials."""
        from ablate.study.variants import add_deltas, study_objective, study_rows

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
                metric=self.sweep.metric,
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
                f"(or their baseline); a verdict needs Holm p < {self.alpha:.2g}"
            )
        return bool(plan)
