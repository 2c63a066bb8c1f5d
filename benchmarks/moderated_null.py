"""False verdicts and power of the moderated t (ablate.stats.moderated) against the plain paired t, one look.

    python benchmarks/moderated_null.py [--studies 20000]

No training: K rows and one baseline, every run normal with sd 1, each row's differences to the shared baseline
tested at α = 0.05 (no Holm: the per-comparison rate). Null: no row differs; power: every row Δ = 2 sd.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import special

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ablate.stats.moderated import moderate_paired  # noqa: E402


def rejected(rng: np.random.Generator, studies: int, rows: int, seeds: int, delta: float) -> tuple[float, float]:
    """(moderated, plain) share of comparisons with p < 0.05."""
    x = rng.standard_normal((studies, rows + 1, seeds))
    d = x[:, 1:] - x[:, :1] + delta  # (studies, rows, seeds)
    mean, var = d.mean(-1), d.var(-1, ddof=1)
    moderated, df, _ = moderate_paired(var, seeds)
    p = 2 * special.stdtr(df, -np.abs(mean) / np.sqrt(moderated / seeds))
    plain = 2 * special.stdtr(seeds - 1, -np.abs(mean) / np.sqrt(var / seeds))
    return float((p < 0.05).mean()), float((plain < 0.05).mean())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--studies", type=int, default=20000)
    args = p.parse_args()
    rng = np.random.default_rng(1)
    for rows in (3, 6, 20):
        for seeds in (3, 5, 8):
            null = rejected(rng, args.studies, rows, seeds, 0.0)
            power = rejected(rng, args.studies, rows, seeds, 2.0)
            print(
                f"{rows} rows, {seeds} seeds: false {null[0]:.4f} moderated / {null[1]:.4f} plain; "
                f"power at Δ = 2 sd {power[0]:.3f} / {power[1]:.3f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
