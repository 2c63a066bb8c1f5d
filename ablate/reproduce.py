"""`python -m ablate.reproduce experiments/X.yaml`: re-run a published table and diff it against its reference."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from rich.text import Text

from ablate import cli
from ablate.errors import ConfigError
from ablate.stats.directions import infer_direction
from ablate.study.decide import with_verdict_flags
from ablate.study.space import StudyConfig, SweepConfig, file_overrides, read_spec, target_fields
from ablate.study.targets import make_target

KEYS = ("name", "cli", "base", "overrides", "metric", "direction", "seeds", "tolerance", "baseline", "margin", "rows")


def load_experiment(path: str | Path, overrides: list[str] = (), flags=None) -> tuple[SweepConfig, object, float]:
    """An experiment file as a grid study over its named rows, that study's target (every row's config checked)
    and its tolerance (in the metric's units); `overrides` (e.g. data.root=...) apply to the base after the file's
    own, `flags` (the parsed --margin, --alpha, --until-decided, --max-seeds) to the study after the file's margin.
    With `cli` (a LightningCLI project, as in a sweep file) the base is its config and rows set the CLI's own keys."""
    path = Path(path)
    raw = read_spec(path, KEYS, "experiment file")
    rows = raw.get("rows") or {}
    if not isinstance(rows, dict) or not rows or any(not isinstance(v, dict) for v in rows.values()):
        raise ConfigError(f"{path}: rows must map row names to {{dotted.key: value}} overrides of the base")
    bad = [name for name in rows if not re.fullmatch(r"[A-Za-z0-9_.+-]+", str(name))]
    if bad:
        raise ConfigError(f"{path}: row names {bad} may only use letters, digits and _ . + - (they become columns)")
    target = target_fields(path, raw, [*file_overrides(path, raw), *overrides], default_base="base.yaml")
    baseline = raw.get("baseline")
    if baseline is not None and baseline not in rows:
        raise ConfigError(f"{path}: baseline {baseline!r} is not a row; rows: {', '.join(rows)}")
    direction = raw.get("direction") or infer_direction(target.get("metric", "val/mIoU"))  # a loss: minimize
    study = StudyConfig(
        name=raw.get("name", path.stem), direction=direction, sampler="grid", pruner="none", margin=raw.get("margin")
    )
    sweep = SweepConfig(
        **target,
        space={"row": {"choices": list(rows)}},
        rows=rows,
        study=with_verdict_flags(study, flags),
        n_trials=len(rows),
        seeds=tuple(raw.get("seeds", [0])),
        baseline=None if baseline is None else {"row": baseline},
    )
    target = make_target(sweep)  # every row's config is checked before anything trains
    tolerance = raw.get("tolerance", 0.01)
    if not isinstance(tolerance, (int, float)) or tolerance < 0:
        raise ConfigError(f"{path}: tolerance must be a non-negative number ({sweep.metric}); got {tolerance!r}")
    return sweep, target, float(tolerance)


def reference_means(path: Path) -> dict[str, float | None]:
    """{row: mean} from a reference table in markdown (as `ablate.table` writes it)."""
    lines = [line for line in path.read_text().splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    if "row" not in header or not any(h.endswith("(mean ± std)") for h in header):
        raise ConfigError(f"{path} is not a table written by ablate (needs the 'row' and '(mean ± std)' columns)")
    mean_col = next(i for i, h in enumerate(header) if h.endswith("(mean ± std)"))
    out = {}
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        text = cells[mean_col].split("±")[0].strip()
        out[cells[header.index("row")]] = float(text) if text.replace(".", "", 1).isdigit() else None
    return out


def compare(reproduced: dict, reference: dict, tolerance: float) -> list[str]:
    """Rows that do not reproduce, each with the reason; prints every row's verdict."""
    failures = []
    for row in sorted(set(reference) | set(reproduced)):
        ref, new = reference.get(row), reproduced.get(row)
        if row not in reference or row not in reproduced or ref is None or new is None:
            failures.append(f"{row}: reference {ref}, reproduced {new}")
            verdict = ("missing", "red")
        elif abs(new - ref) > tolerance:
            failures.append(f"{row}: reproduced {new:.4f}, reference {ref:.4f}, |Δ| {abs(new - ref):.4f} > {tolerance}")
            verdict = ("differs", "red")
        else:
            verdict = ("reproduces", "green")
        cli.console.print(Text.assemble("  ", verdict, f"  {row}: reproduced {new}, reference {ref}"))
    return failures


def main(argv: list[str] | None = None) -> int:
    """Command line: run every row x seed as a resumable study, then diff against experiments/X.md."""
    p = cli.parser(
        "reproduce",
        __doc__,
        "experiment file, e.g. experiments/aspp_components.yaml, and dotted "
        "overrides of its base run config, e.g. data.root=/data/pascal, in any order",
    )
    cli.add_storage_argument(p)
    p.add_argument("--reference", help="reference table (default: the experiment file with .md)")
    cli.add_verdict_arguments(p, until_decided=True)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = cli.parse(p, argv)
    return cli.guarded(lambda: _reproduce(args, argv))


def _reproduce(args, argv: list[str]) -> int:
    from ablate.results.summary import show_study
    from ablate.study.engine import Interrupt, prints_the_end, quiet, run_study
    from ablate.study.storage import resolve

    Interrupt.install()
    quiet()
    path, overrides = cli.split_inputs(args.inputs)
    if path is None:
        raise ConfigError("give an experiment file, e.g. experiments/aspp_components.yaml")
    sweep, target, tolerance = load_experiment(path, overrides, args)
    reference = Path(args.reference or Path(path).with_suffix(".md"))
    expected = reference_means(reference) if reference.is_file() else None  # read before hours of training
    try:
        status = run_study(sweep, target, resolve(args.storage))
        if prints_the_end(status):
            show_study(sweep, resolve(args.storage), cli.command_line("reproduce", argv))
    except KeyboardInterrupt as e:  # cli.guarded prints it: what stopped, and what is kept
        kept = "the study keeps its finished runs: run the same command to go on"
        raise KeyboardInterrupt(f"{e or 'Ctrl-C'}; {kept}") from None
    produced = reference_means(Path("runs") / sweep.study.name / "table.md")
    if expected is None:
        cli.warn(
            f"no reference table {reference} yet: check in runs/{sweep.study.name}/table.md as {reference} "
            "to make this run the reference"
        )
        return 1
    cli.console.print(f"compare with {reference} (tolerance {tolerance} {sweep.metric}):")
    failures = compare(produced, expected, tolerance)
    for failure in failures:
        cli.error(f"does not reproduce: {failure}")
    return 1 if failures or status else 0


if __name__ == "__main__":
    sys.exit(main())
