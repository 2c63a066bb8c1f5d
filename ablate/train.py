"""`python -m ablate.train [CONFIG.yaml] [key=value ...] [--output DIR]`: train one configuration."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ablate import cli


def main(argv: list[str] | None = None) -> int:
    """Command line: parse, validate, train, print where the results are."""
    p = cli.parser(
        "train",
        __doc__,
        "YAML run config (default: the built-in defaults, as experiments/base.yaml) and "
        "dotted overrides, e.g. model.neck.norm=none trainer.max_epochs=1, in any order",
    )
    p.add_argument("--output", default=None, help="run folder (default runs/train/<timestamp>)")
    args = cli.parse(p, argv)

    def body() -> int:
        from ablate.config import load_config
        from ablate.run.fit import run

        cfg = load_config(*cli.split_inputs(args.inputs))
        output = Path(args.output or f"runs/train/{time.strftime('%Y%m%d-%H%M%S')}")
        try:
            summary = run(cfg, output)
        except (KeyboardInterrupt, SystemExit) as e:  # Ctrl-C: cli.guarded says so in one line
            if cli.interruption(e) is None or not output.exists():
                raise
            raise KeyboardInterrupt(f"{output} keeps what the run wrote before it stopped (no summary.json)") from e
        cli.console.print(
            f"val/mIoU {summary['val/mIoU']:.4f}  best {summary['val/mIoU_best']:.4f}  "
            f"neck params {summary['params/neck']:,}  GFLOPs {summary['gflops']:.2f}\n"
            f"summary: {output / 'summary.json'}"
        )
        return 0

    return cli.guarded(body)


if __name__ == "__main__":
    sys.exit(main())
