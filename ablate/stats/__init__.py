"""Statistics beneath the study and its tables: paired and moderated t, Holm, TOST, seeds estimates, factorial
effects, which way a metric is better (numpy and scipy only: no torch, no Optuna)."""
