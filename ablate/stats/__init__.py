"""Statistics beneath the study and its tables: paired and moderated t, Holm, TOST, seeds estimates, factorial
effects, which way a metric is better (numpy and scipy only: no torch, no Optuna)."""

ROW_FIELDS = (  # what ablate.stats.verdicts.annotate sets on each row (here: the tables read it without scipy)
    "delta",
    "ci_low",
    "ci_high",
    "boot_low",
    "boot_high",
    "test",
    "p_value",
    "p_value_plain",
    "df",
    "prior_df",
    "p_adjusted",
    "p_equivalence",
    "verdict",
    "seeds_needed",
)
MAX_SEEDS = 1000  # seeds_needed is capped here: "at least this many" (ablate.stats.verdicts)
