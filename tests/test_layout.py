"""The package's shape: every module imports on its own, no import circle, the library never imports a command, and
a command's --help stays light (no torch, no Lightning)."""

import ast
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import ablate

PACKAGE = Path(ablate.__file__).parent
COMMANDS = {f"ablate.{c}" for c in ("train", "sweep", "table", "report", "dashboard", "reproduce", "analyze", "status")}
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its __init__.py)."""
    out = {"ablate": PACKAGE / "__init__.py"}
    for info in pkgutil.walk_packages([str(PACKAGE)], prefix="ablate."):
        base = PACKAGE.joinpath(*info.name.split(".")[1:])
        out[info.name] = base / "__init__.py" if info.ispkg else base.with_suffix(".py")
    return out


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The ablate modules `name` imports anywhere in its file (at the top or inside a function): `import a.b`,
    `from a.b import c` (a.b.c when c is a module, else a.b), relative imports resolved."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([base] if base else [])])
            out.update(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names)
    return {m for m in out if m in known and m != name}


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(name, path, set(found)) for name, path in found.items()}


def cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import circle as [a, b, ..., a], or None (depth-first search, colouring the modules on the path)."""
    state, path = {}, []

    def visit(m):
        state[m] = "open"
        path.append(m)
        for n in sorted(edges[m]):
            if state.get(n) == "open":
                return path[path.index(n) :] + [n]
            if n not in state and (found := visit(n)):
                return found
        state[m] = "done"
        path.pop()
        return None

    return next((c for m in sorted(edges) if m not in state and (c := visit(m))), None)


def test_the_graph_reader_sees_every_kind_of_import(tmp_path):
    src = tmp_path / "m.py"
    src.write_text(
        "import ablate.cli\nfrom ablate.study import engine\nfrom ablate.errors import ConfigError\n"
        "def f():\n    from .results.runs import run_folders\n    from . import table\n"
    )
    known = {
        "ablate",
        "ablate.cli",
        "ablate.study",
        "ablate.study.engine",
        "ablate.errors",
        "ablate.results",
        "ablate.results.runs",
        "ablate.table",
    }
    assert imports("ablate.m", src, known) == {
        "ablate.cli",
        "ablate.study.engine",
        "ablate.errors",
        "ablate.results.runs",
        "ablate.table",
    }
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_every_module_imports_in_a_fresh_interpreter():
    names = sorted(modules())
    assert {"ablate.cli", "ablate.__main__", *COMMANDS} <= set(names) and len(names) > 30
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\nprint('ok')"
    done = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


def test_no_import_circle_and_the_library_never_imports_a_command():
    edges = graph()
    assert cycle(edges) is None, " -> ".join(cycle(edges))
    library = set(edges) - COMMANDS - {"ablate.__main__"}  # ablate.cli, the plumbing, counts as library here
    wrong = {m: sorted(edges[m] & COMMANDS) for m in sorted(library) if edges[m] & COMMANDS}
    assert wrong == {}, f"library modules importing commands: {wrong}"


@pytest.mark.parametrize("command", ["table", "report", "dashboard", "status"])
def test_help_of_a_command_that_trains_nothing_loads_no_torch(command):
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", f"ablate.{command}", "--help"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    assert done.returncode == 0 and f"python -m ablate.{command}" in done.stdout
    loaded = {line.rpartition("|")[2].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "ablate.cli" in loaded  # what -X importtime reports is what was imported (the command runs as __main__)
    assert {m for m in loaded if m.split(".")[0] in ("torch", "lightning", "pytorch_lightning")} == set()


def test_the_callbacks_never_read_ablate_s_run_config():
    """ablate.callbacks read the module, the datamodule and the batch: nothing they import, even through other
    modules, reaches ablate.config, so any Lightning project gets them as ablate's own model does."""
    edges = graph()
    reached, todo = set(), [m for m in edges if m.startswith("ablate.callbacks")]
    assert "ablate.callbacks.metrics" in todo
    while todo:
        m = todo.pop()
        if m not in reached:
            reached.add(m)
            todo += edges[m]
    assert "ablate.config" not in reached, sorted(reached)


FLOORS = (  # top-down, as docs/explanation/design.md draws them: a module imports its own floor or floors below
    ("commands", lambda m: m in COMMANDS or m == "ablate.__main__"),
    ("results", lambda m: m.startswith("ablate.results")),
    ("study", lambda m: m.startswith("ablate.study")),
    ("one run", lambda m: m.split(".")[1] in ("run", "callbacks", "data", "necks", "config")),
    ("stats", lambda m: m.startswith("ablate.stats")),
    ("plumbing", lambda m: m in ("ablate", "ablate.cli", "ablate.errors")),
)


def floor(module: str) -> int:
    return next(i for i, (_, holds) in enumerate(FLOORS) if holds(module))


def test_every_import_points_down_a_floor_or_stays_on_it():
    edges = graph()
    up = sorted(
        f"{m} ({FLOORS[floor(m)][0]}) imports {n} ({FLOORS[floor(n)][0]})"
        for m in edges
        for n in edges[m]
        if floor(n) < floor(m)
    )
    assert up == [], "\n".join(up)


def test_the_statistics_need_numpy_and_scipy_only():
    """ablate.stats imports (at the top or in a function) only the standard library, numpy, scipy and itself, and
    running its verdicts and factorial effects loads neither torch, Optuna, pandas nor statsmodels."""
    allowed = {"numpy", "scipy", "ablate", *sys.stdlib_module_names}
    for name, path in modules().items():
        if name.startswith("ablate.stats"):
            tree = ast.parse(path.read_text())
            roots = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
            roots |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
            assert roots <= allowed, f"{name} imports {sorted(roots - allowed)}"
    code = (
        "import sys, numpy as np\n"
        "from ablate.stats.verdicts import annotate\nfrom ablate.stats.factorial import factorial_effects\n"
        "rng = np.random.default_rng(0)\n"
        "rows = [{'variant': f'a={a} b={b}', 'seeds': {str(s): float(rng.normal(0.5, 0.02)) for s in range(3)}}\n"
        "        for a in (1, 2) for b in ('x', 'y')]\n"
        "annotate(rows, rows[0], margin=1.0)\nassert factorial_effects(rows)\n"
        "print(sorted(m for m in ('torch', 'optuna', 'pandas', 'statsmodels', 'lightning') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr[-3000:]
