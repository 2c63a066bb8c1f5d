"""Racing variants to the best (`--race`): F-Race (Birattari et al. 2002, as in irace) on the seeds of a search study.

- The sampler's variants run with the planned seeds (n_trials, as always); then seeds come in rounds, through the
  rounds of `--until-decided` (`ablate.study.decide.Rounds`, one mechanism for adding seeds), to the variants still
  in the race. Running the same command with a larger n_trials adds the sampler's new variants with the planned
  seeds, and the race goes on with them.
- A look (before each round, once no trial runs or waits) compares every variant still in the race with the
  leader, the best of them (`versus_leader`: paired on shared seeds, the moderated t across the field unless
  study.moderate is false (--no-moderation: the plain t), Holm over the field, TOST with the margin): these are the
  verdicts an equivalent or open variant gets. A variant is eliminated by the seed-blocked t of the whole field
  (`eliminate`: ablate.stats.moderated.blocked_t, its variances moderated unless --no-moderation; Holm over the
  field): the seed shifts are estimated from every variant, so its t has the field's degrees of freedom, where a
  paired difference to the leader carries the leader's noise and its moderated prior stays near 4 df. Every look
  uses the α per look of that t (decide.race_alpha). One decided worse is eliminated
  for good: it never gets a seed again, and a trial that draws it again is pruned before it trains (its look is
  kept in the study's `race` user attr). One equivalent to the leader gets no seed (either is as good within the
  margin); an open one gets one, and the leader the seeds that pair them (`plan_round`), unless neither TOST nor
  the seed-blocked t could decide it within max_seeds (its estimate, `look`: the estimate stop of --until-decided
  with the t that eliminates).
- The race ends when no comparison is open and the leader has max_seeds seeds (`plan_race`); the sweep's end
  names the leader, the variants equivalent to it and what each eliminated variant cost (`race_summary`).
"""

from __future__ import annotations

import numpy as np
import optuna
from optuna.trial import TrialState

from ablate.cli import console
from ablate.stats.directions import delta_scale, values_of
from ablate.study.decide import ROUND, Rounds, choose_seeds, plan_round, race_alpha, seeds_in_use, variant_params

RACE = "race"  # study user attr: {variant: the look that eliminated it}


def versus_leader(
    rows: list[dict], *, margin: float | None, alpha: float, direction: str, moderate: bool, scale: float = 100.0
) -> dict:
    """The leader (the best of `rows` by mean, in `direction`); every other row gets its verdict against it
    (ablate.stats.verdicts.annotate: paired on shared seeds, moderated across `rows` with `moderate`, Holm over
    `rows`; seeds_needed TOST's alone, as `eliminate` estimates the differences; Δ and margin in points, `scale` as
    annotate's). Rows need a mean."""
    from ablate.stats.verdicts import annotate

    sign = 1 if direction == "maximize" else -1
    leader = max(rows, key=lambda r: sign * r["mean"])
    options = {"margin": margin, "alpha": alpha, "direction": direction, "moderate": moderate, "scale": scale}
    annotate(rows, leader, difference_needed=False, **options)
    return leader


def eliminate(field: list[dict], leader: dict, *, alpha: float, direction: str, moderate: bool) -> list[str]:
    """The variants of `field` decided worse than `leader` by the seed-blocked t of the whole field (blocked_t on
    every row's {seed: value}), Holm over the field at `alpha`. Each other row gets race_p (the raw p; None when it
    cannot be tested: fewer than 2 seeds), race_p_adjusted (Holm's) and race_seeds_needed (`seeds_to_separate` at
    Holm's next threshold: the seeds at which this t would tell it from the leader; None when unknown)."""
    from ablate.stats.moderated import blocked_t
    from ablate.stats.verdicts import holm, holm_open, seeds_to_separate

    seeds = sorted({s for r in field for s in r["seeds"]})
    x = np.array([[r["seeds"].get(s, np.nan) for s in seeds] for r in field], float)
    at = next(i for i, r in enumerate(field) if r is leader)
    delta, p, df, se = blocked_t(x, at, moderate)
    others = [i for i in range(len(field)) if i != at]
    adjusted = holm([None if np.isnan(p[i]) else float(p[i]) for i in others])
    family = holm_open(adjusted, alpha)
    sign = 1 if direction == "maximize" else -1
    worse = []
    for i, p_adjusted in zip(others, adjusted):
        needed = seeds_to_separate(
            delta[i], se[i], df[i], len(field[i]["seeds"]), len(leader["seeds"]), alpha=alpha / family
        )
        field[i].update(
            race_p=None if np.isnan(p[i]) else float(p[i]), race_p_adjusted=p_adjusted, race_seeds_needed=needed
        )
        if p_adjusted is not None and p_adjusted < alpha and sign * delta[i] < 0:
            worse.append(field[i]["variant"])
    return worse


def look(rows: list[dict], out, *, margin: float | None, alpha: float, direction: str, moderate: bool, scale=100.0):
    """One look of the race: (leader, the field, newly eliminated variants); `alpha` the race's α per look
    (`race_alpha`), `scale` as annotate's (100: points of a fraction).

    The field: rows with a mean whose variant is not in `out` (eliminated at an earlier look), each compared with
    the leader (`versus_leader`); those `eliminate` decides worse leave the field here, with verdict "worse". A row
    the paired t alone calls worse stays in the race as "undecided" (open: it gets a seed). An undecided row's
    seeds_needed is the fewer of TOST's (equivalence) and the seed-blocked t's (elimination): a row neither could
    decide within max_seeds gets no more seeds (`plan_round`'s estimate stop), however the paired t's difference
    would. (None, [], []) when no row has a mean."""
    from ablate.stats.verdicts import MAX_SEEDS

    field = [r for r in rows if r["mean"] is not None and r["variant"] not in out]
    if not field:
        return None, [], []
    leader = versus_leader(field, margin=margin, alpha=alpha, direction=direction, moderate=moderate, scale=scale)
    worse = eliminate(field, leader, alpha=alpha, direction=direction, moderate=moderate)
    for r in field:
        if r["variant"] in worse:
            r["verdict"] = "worse"
            continue
        if r["verdict"] == "worse":  # a difference the paired t shows: no TOST estimate (annotate's are for
            r.update(verdict="undecided", seeds_needed=MAX_SEEDS)  # undecided rows), the seed-blocked t's decides
        if r["verdict"] == "undecided":
            estimates = (r["seeds_needed"], r["race_seeds_needed"])
            r["seeds_needed"] = None if None in estimates else min(estimates)  # None: unknown, open
    return leader, [r for r in field if r["variant"] not in worse], worse


def plan_race(field: list[dict], leader: dict, used: dict[str, set[int]], max_seeds: int) -> dict[str, list[int]]:
    """{variant: seeds to add} for the race's next round; {} when it ends.

    `plan_round` over the field (an open row gets a seed, the leader those that pair them); when it adds nothing
    and the leader has fewer than max_seeds seeds, the leader gets one more: a lead on few seeds may be luck (a
    bimodal variant whose seeds all learned), so the race ends only with a leader on max_seeds seeds."""
    plan = plan_round(field, leader, used, max_seeds)
    taken = used.get(leader["variant"], set())
    if plan or len(taken) >= max_seeds:
        return plan
    return {leader["variant"]: choose_seeds((), taken, 1)}


def next_look(trials: list) -> int:
    """The number of the look before the next round: 1 after the planned trials."""
    return 1 + max((t.user_attrs.get(ROUND, 0) for t in trials), default=0)


def eliminated(study: optuna.Study, before: int | None = None) -> dict[str, int]:
    """{variant: look} of the variants out of the race (only those out before look `before`, when given)."""
    out = study.user_attrs.get(RACE) or {}
    return {v: k for v, k in out.items() if before is None or k < before}


def check_in_race(trial: optuna.Trial, variant: str) -> None:
    """A trial the sampler drew for an eliminated variant is pruned before it trains."""
    if variant in eliminated(trial.study):
        trial.set_user_attr("fail_reason", f"eliminated from the race at look {eliminated(trial.study)[variant]}")
        raise optuna.TrialPruned(f"{variant} was eliminated from the race")


class Race(Rounds):
    """Plans the race's rounds (`Rounds` enqueues them); eliminations are recorded as each look is taken."""

    name = "a race to the best"

    def __init__(self, sweep):
        super().__init__(sweep)
        self.alpha = race_alpha(sweep)

    def __str__(self) -> str:
        return f"eliminating variants decided worse than the leader; {super().__str__()}"

    def plan(self, study: optuna.Study, trials: list) -> tuple[dict, dict]:
        """({variant: seeds to add}, {variant: a complete trial's params}) for the field of this look."""
        from ablate.study.variants import study_objective, study_rows

        n = next_look(trials)
        rows = study_rows(trials, None, *study_objective(study))
        s = self.sweep.study
        leader, field, worse = look(
            rows,
            eliminated(study, n),
            margin=s.margin,
            alpha=self.alpha,  # race_alpha
            direction=study.direction.name.lower(),
            moderate=s.moderate,
            scale=delta_scale(self.sweep.metric, values_of(rows)),
        )
        if leader is None:
            return {}, {}
        new = [v for v in worse if v not in eliminated(study)]  # a look retaken (the same trials) adds none
        if new and not any(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in trials):
            study.set_user_attr(RACE, {**eliminated(study), **dict.fromkeys(new, n)})
            console.print(f"race look {n}: {len(new)} variant(s) out, worse than the leader; {len(field)} left")
        return plan_race(field, leader, seeds_in_use(trials), s.max_seeds), variant_params(trials)


def runs_of(trials: list) -> dict[str, int]:
    """{variant: runs it took}: every seed a finished trial of it trained, a pruned or failed seed included (a trial
    pruned because its variant was out of the race trained none)."""
    runs: dict[str, int] = {}
    for t in trials:
        if "variant" not in t.user_attrs or not t.state.is_finished():
            continue
        partial = t.state != TrialState.COMPLETE and not t.user_attrs.get("fail_reason", "").startswith("eliminated")
        runs[t.user_attrs["variant"]] = (
            runs.get(t.user_attrs["variant"], 0) + len(t.user_attrs.get("seeds", [])) + partial
        )
    return runs


def race_summary(study: optuna.Study) -> str | None:
    """The end of a race: the leader, the variants equivalent to it within the margin, those still open, and what
    each eliminated variant cost (runs); None for a study that does not race."""
    from ablate.study.variants import rows_of, short_labels, study_objective, study_verdicts

    if not (study.user_attrs.get("verdicts") or {}).get("race"):
        return None
    rows, v, out = rows_of(study), study_verdicts(study), eliminated(study)
    options = {"margin": v["margin"], "alpha": v["race_alpha"], "moderate": v["moderate"]}  # as the sweep raced
    metric, direction = study_objective(study)
    leader, field, _ = look(rows, out, direction=direction, scale=delta_scale(metric, values_of(rows)), **options)
    if leader is None:
        return "race: no variant has a complete seed yet"
    label, runs = short_labels(rows), runs_of(study.get_trials(deepcopy=False))

    def named(verdict: str | None = None) -> str:
        rs = [leader] if verdict is None else [r for r in field if r["verdict"] == verdict]
        return ", ".join(f"{label[r['variant']]} ({r['mean']:.4f}, {r['n']} seeds)" for r in rs) or "none"

    gone = sorted(out.items(), key=lambda kv: (kv[1], kv[0]))
    equivalent = (
        f"equivalent to it within ±{v['margin']:g} points: {named('equivalent')}"
        if v["margin"]
        else "no margin (--margin): no variant can be shown equivalent to it"
    )
    lines = [
        f"race: leader {named()}",
        f"  {equivalent}",
        f"  still open (at --max-seeds, or an estimate above it): {named('undecided')}",
        f"  eliminated ({len(gone)}), worse than the leader at look k by the seed-blocked t of the field (Holm, "
        f"α per look {v['race_alpha']:.4g}; the table above stays paired), with the runs each cost: "
        + (", ".join(f"{label[g]} ({runs.get(g, 0)} runs, look {k})" for g, k in gone) or "none"),
        f"  runs: {sum(runs.values())} in all, {sum(runs.get(g, 0) for g, _ in gone)} on eliminated variants",
    ]
    return "\n".join(lines)
