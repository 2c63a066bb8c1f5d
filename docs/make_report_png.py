"""Makes docs/report.png again: runs the default study as a new user would, writes its HTML report, and takes a
screenshot of it in headless Chromium (as tests/test_report.py does).

    python docs/make_report_png.py                 # the default study in a fresh temporary folder, then the picture
    python docs/make_report_png.py --folder DIR    # in DIR: a study already there is resumed (or only reported)

How long it takes: the default study itself, 5 min 29 s on an idle 2-core Intel Xeon (2026-12-05, see
docs/performance.md), about twice that on a 2-core AMD EPYC, plus about half a minute for the report and the
screenshot. It needs what (b) of the README installs: ablate with its dependencies, and Chromium.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT = 1400, 5600  # the picture's size: the report from its conclusion down to the predictions


def run(*argv: str, cwd: Path) -> None:
    """`python -m ablate.<argv>` in `cwd`, its output shown; a failure stops the script."""
    print("$ python -m", " ".join(argv), flush=True)
    subprocess.run([sys.executable, "-m", *argv], cwd=cwd, check=True, env={**os.environ, "WANDB_MODE": "offline"})


def screenshot(html: Path, png: Path) -> None:
    """Headless Chromium's screenshot of `html`, with every host name unresolvable (the report fetches nothing)."""
    exe = shutil.which("chromium")
    if exe is None:
        sys.exit("chromium not found: apt-get install -y chromium (Debian's package)")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                exe,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--host-resolver-rules=MAP * ~NOTFOUND",
                f"--user-data-dir={profile}",
                "--virtual-time-budget=10000",
                "--hide-scrollbars",
                f"--window-size={WIDTH},{HEIGHT}",
                f"--screenshot={png}",
                html.as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=300,
        )


def main(argv: list[str] | None = None) -> int:
    """Run the default study, its report, and the screenshot into docs/report.png."""
    p = argparse.ArgumentParser(description="docs/report.png from the default study")
    p.add_argument("--folder", type=Path, help="where the study runs (default: a new temporary folder)")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "report.png", help="the picture (default: %(default)s)")
    args = p.parse_args(argv)
    folder = args.folder or Path(tempfile.mkdtemp(prefix="ablate-report-"))
    folder.mkdir(parents=True, exist_ok=True)
    run("ablate.sweep", cwd=folder)  # the default study: resumed, or only its table when it is finished
    run("ablate.report", "--study", "default", cwd=folder)
    screenshot(folder / "runs" / "default" / "report.html", args.out)
    print(f"wrote {args.out} ({WIDTH}x{HEIGHT}) from the study in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
