"""The docs cannot rot: every code block of README.md and docs/ is run here or marked as not run with a reason
(docs/contributing.md says how), the generated reference equals what the code gives, and the site builds strict
and renders in Chromium."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from helpers import ROOT

_spec = importlib.util.spec_from_file_location("gen_reference", ROOT / "docs" / "gen_reference.py")
gen_reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen_reference)

MARKER = re.compile(r"<!--\s*(not run|as|output of):\s*(.*?)\s*-->")
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)\s*$")
CHEAP = ("table", "report", "analyze", "status")  # read a study or a config; never train
CHEAP_FLAGS = ("--help", "-h", "--dry-run", "--slurm-script")
TINY = ["data.train_size=16", "data.val_size=8", "data.batch_size=4", "model.neck.out_channels=16"]
TINY += ["trainer.max_epochs=1", "trainer.enable_checkpointing=false", "wandb.mode=disabled"]


@dataclass(frozen=True)
class Block:
    path: str  # relative to the repository
    line: int  # of the opening fence, from 1
    lang: str
    text: str
    marker: str | None  # "not run", "as", "output of"
    arg: str | None


def read_blocks(path: Path, root: Path = ROOT) -> list[Block]:
    """The fenced code blocks of a Markdown file, each with the marker on the line before it (blank lines aside)."""
    lines, out, i = path.read_text().splitlines(), [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = m.groups()
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == fence)
        body = "\n".join(line[len(indent) :] for line in lines[i + 1 : end]) + "\n"
        before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        mark = MARKER.search(before)
        rel = path.relative_to(root).as_posix()
        out.append(Block(rel, i + 1, lang, body, mark and mark.group(1), mark and mark.group(2)))
        i = end + 1
    return out


def doc_files(root: Path = ROOT) -> list[Path]:
    docs = [p for p in sorted((root / "docs").rglob("*.md")) if not p.is_symlink()]  # changelog.md: CHANGELOG.md
    return [root / "README.md", root / "CHANGELOG.md", *docs]


BLOCKS = [b for p in doc_files() for b in read_blocks(p)]


def kind(block: Block) -> str:
    """How a block is checked: 'skip' (marked not run), 'shell', 'yaml', 'python' or 'output'; an unmarked block of
    another kind is an error that says how to mark it."""
    if block.marker == "not run":
        if not block.arg:
            raise AssertionError(f"{block.path}:{block.line}: <!-- not run: --> needs a reason")
        return "skip"
    if block.marker == "output of":
        return "output"
    if block.lang in ("bash", "sh", "shell") and block.marker is None:
        return "shell"
    if block.lang in ("yaml", "yml", "python"):
        return "python" if block.lang == "python" else "yaml"
    raise AssertionError(
        f"{block.path}:{block.line}: a ```{block.lang} block that the tests neither run nor skip: mark it "
        "<!-- not run: REASON --> (or <!-- output of: COMMAND --> for a command's output); docs/contributing.md"
    )


def commands(text: str) -> list[list[str]]:
    """Each simple command of a shell block (split at &&, ; and new lines), as argv, comments dropped."""
    out = []
    for line in text.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        current: list[str] = []
        for word in [*words, "&&"]:
            if word in ("&&", ";", "||"):
                if current:
                    out.append(current)
                current = []
            else:
                current.append(word)
    return out


def ablate_argv(argv: list[str]) -> tuple[str, list[str]] | None:
    """('sweep', [args]) for `python -m ablate.sweep args` or `ablate sweep args`; ('', args) for bare `ablate`."""
    while argv and re.fullmatch(r"[A-Z_]+=\S*", argv[0]):  # VAR=value python ...
        argv = argv[1:]
    if argv[:2] == ["python", "-m"] and len(argv) > 2 and argv[2].startswith("ablate"):
        return argv[2].removeprefix("ablate").removeprefix("."), argv[3:]
    if argv and argv[0] == "ablate":
        return ("", argv[1:]) if len(argv) < 2 or argv[1].startswith("-") else (argv[1], argv[2:])
    return None


def run_command(name: str, args: list[str]) -> int:
    """Run `python -m ablate.<name> args` in this process; argparse's --help exit is its return code."""
    module = importlib.import_module(f"ablate.{name}" if name else "ablate.__main__")
    try:
        return module.main(args)
    except SystemExit as e:
        return e.code or 0


def builtin_necks() -> None:
    """The neck registry as ablate ships it: a block that registers a neck of its own can run again."""
    from ablate.necks import registry

    for name in [n for n, factory in registry._NECKS.items() if not factory.__module__.startswith("ablate.")]:
        del registry._NECKS[name]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    """A copy of what the docs' examples use, with every `<!-- as: PATH -->` block written to its PATH (a block may
    use another's file) and a tiny finished study `default` (2 variants of the default grid, 2 seeds, one epoch of
    16 images) in runs/ablate.db; it is on sys.path, as the folder `python -m` runs in is."""
    root = tmp_path_factory.mktemp("docs")
    for part in ("experiments", "sweeps", "ablate/configs", "examples", "tests/deeplab_project"):
        shutil.copytree(ROOT / part, root / part, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", "runs"))
    for block in BLOCKS:
        if block.marker == "as":
            (root / block.arg).parent.mkdir(parents=True, exist_ok=True)
            (root / block.arg).write_text(block.text)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.delenv("ABLATE_STORAGE", raising=False)
        mp.syspath_prepend(str(root))
        assert run_command("sweep", [*TINY, "--n-trials", "2", "--max-seeds", "2", "--workers", "1"]) == 0
        yield root
    builtin_necks()


def project_sweep(folder: Path, root: Path) -> tuple[Path, dict]:
    """The first sweep file with `cli` in `folder` or above it (within `root`): the project a config belongs to."""
    for where in [folder, *folder.parents]:
        for path in sorted(where.glob("*.yaml")):
            spec = yaml.safe_load(path.read_text())
            if isinstance(spec, dict) and spec.get("cli") and not path.name.startswith("_docs"):
                return path, spec
        if where == root:
            break
    raise AssertionError(f"no sweep file with `cli` in {folder} or above: which project is this config of?")


def check_yaml(path: Path, root: Path) -> None:
    """A sweep file is dry-run, an experiment file loaded, a LightningCLI config parsed by its project's CLI on top
    of the project's base config, anything else loaded as ablate's run config."""
    from ablate.config import load_config
    from ablate.reproduce import load_experiment
    from ablate.study.space import load_sweep
    from ablate.study.targets import make_target

    spec = yaml.safe_load(path.read_text())
    if "space" in spec:  # from its own folder, as the docs run it (a `--config=` override is relative to it)
        with contextlib.chdir(path.parent):
            assert run_command("sweep", [str(path), "--dry-run"]) == 0
    elif "rows" in spec:
        load_experiment(path)
    elif "class_path" in path.read_text():
        sweep_file, project = project_sweep(path.parent, root)
        probe = sweep_file.parent / "_docs_probe.yaml"
        probe.write_text(
            yaml.safe_dump(
                {
                    "cli": project["cli"],
                    "base": project["base"],
                    "metric": project.get("metric", "val/mIoU"),
                    "overrides": [f"--config={path}"],
                    "study": {"name": "docs_probe", "sampler": "grid", "pruner": "none"},
                    "n_trials": 1,
                    "space": {"trainer.max_epochs": {"choices": [1]}},
                }
            )
        )
        make_target(load_sweep(probe))
    else:
        load_config(path)


@pytest.mark.parametrize("block", BLOCKS, ids=[f"{b.path}:{b.line}" for b in BLOCKS])
def test_block(block, sandbox, monkeypatch, capsys):
    how = kind(block)
    monkeypatch.chdir(sandbox)
    if how == "skip":  # not run; its ablate commands are still parsed by their own parsers
        for argv in commands(block.text) if block.lang in ("bash", "sh") else []:
            if (found := ablate_argv(argv)) and found[0]:
                parser = gen_reference.command_parser(found[0])
                with pytest.raises(SystemExit) if {"-h", "--help"} & set(found[1]) else contextlib.nullcontext():
                    parser.parse_intermixed_args(found[1])
    elif how == "shell":
        for argv in commands(block.text):
            if argv[0] == "cd":
                monkeypatch.chdir(sandbox / argv[1])
                continue
            found = ablate_argv(argv)
            assert found, f"{block.path}:{block.line}: {shlex.join(argv)} is not an ablate command: mark the block"
            name, args = found
            assert name in CHEAP or set(CHEAP_FLAGS) & set(args) or (name == "dashboard" and "--dry-run" in args), (
                f"{block.path}:{block.line}: {shlex.join(argv)} would train: mark the block <!-- not run: REASON -->"
            )
            assert run_command(name, args) == 0, f"{block.path}:{block.line}: {shlex.join(argv)}"
    elif how == "output":
        name, args = ablate_argv(shlex.split(block.arg))
        monkeypatch.setenv("COLUMNS", "200")  # as wide as the block: no table wrapped to a narrow terminal
        capsys.readouterr()
        assert run_command(name, args) == 0
        shown = [line.strip() for line in capsys.readouterr().out.splitlines() if line.strip()]
        assert shown == [line.strip() for line in block.text.splitlines() if line.strip()]
    else:
        path = sandbox / (block.arg or f"_docs_{block.path.replace('/', '_')}_{block.line}.{block.lang[:2]}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(block.text)
        if how == "yaml":
            check_yaml(path, sandbox)
        elif block.marker == "as":  # imported as the module it is, as a config's `imports:` or a `cli:` imports it
            builtin_necks()
            monkeypatch.syspath_prepend(str(path.parent))
            sys.modules.pop(path.stem, None)
            try:
                importlib.import_module(path.stem)
            finally:  # the tests after this one in the same process see neither the module nor its necks
                sys.modules.pop(path.stem, None)
                builtin_necks()
        else:
            exec(compile(block.text, f"{block.path}:{block.line}", "exec"), {"__name__": "__docs__"})


def test_every_block_is_run_or_marked_and_the_counts(capsys):
    kinds = [kind(b) for b in BLOCKS]  # raises on a block that is neither
    reasons: dict[str, int] = {}
    for b in BLOCKS:
        if b.marker == "not run":
            reasons[b.arg] = reasons.get(b.arg, 0) + 1
    with capsys.disabled():
        print(
            f"\ncode blocks in README.md and docs/: {len(BLOCKS)}; run {len(BLOCKS) - kinds.count('skip')} "
            f"(shell {kinds.count('shell')}, yaml {kinds.count('yaml')}, python {kinds.count('python')}, output "
            f"{kinds.count('output')}); not run {kinds.count('skip')}:"
        )
        for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1]):
            print(f"  {n} x {reason}")


def test_an_unmarked_block_fails(tmp_path):
    page = tmp_path / "docs" / "page.md"
    page.parent.mkdir()
    page.write_text(
        "Text.\n\n```text\nsome output\n```\n\n<!-- not run: trains -->\n```bash\npython -m ablate.sweep\n```\n"
    )
    first, second = read_blocks(page, tmp_path)
    with pytest.raises(AssertionError, match="neither run nor skip"):
        kind(first)
    assert kind(second) == "skip"


def test_the_generated_pages_are_what_the_code_gives():
    assert gen_reference.stale() == [], "run python docs/gen_reference.py"


def test_every_key_is_documented_and_every_example_is_valid(tmp_path):
    from ablate.config import load_config
    from ablate.study.slurm import check_section
    from ablate.study.space import load_sweep

    fields = gen_reference.config_fields()
    assert [key for key, _, _, what in fields if not what] == []
    keys = {key for key, *_ in fields}
    assert set(gen_reference.CONFIG_EXAMPLES) <= keys and set(gen_reference.CONFIG_DOCS) <= keys
    for example in gen_reference.CONFIG_EXAMPLES.values():
        load_config(None, shlex.split(example))
    for key, value in gen_reference.STUDY_EXAMPLES.items():
        sweep = tmp_path / f"{key}.yaml"
        space = {"model.neck.norm": {"choices": ["bn", "none"]}}
        sweep.write_text(yaml.safe_dump({"base": {}, "study": {key: value}, "space": space}))
        load_sweep(sweep)
    for _, _, example in gen_reference.SPACE_FORMS:
        sweep = tmp_path / "space.yaml"
        sweep.write_text(f"base: {{}}\nspace: {{model.neck.rates: {example}}}\n")
        load_sweep(sweep)
    for key, (_, _, example) in gen_reference.SLURM_DOCS.items():
        check_section("", yaml.safe_load(f"{key}: {example}"))


def test_the_site_builds_strict_and_renders_in_chromium(tmp_path):
    site = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(site)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0 and "WARNING" not in done.stderr, done.stderr[-3000:]
    from PIL import Image
    from test_report import chromium

    for page in ("index.html", "reference/config.html"):
        shot = tmp_path / (page.replace("/", "_") + ".png")
        chromium((site / page).as_uri(), f"--screenshot={shot}", "--window-size=1280,900", profile=tmp_path / "p")
        with Image.open(shot) as image:
            colors = image.convert("RGB").getcolors(1 << 24)
            assert image.size == (1280, 900) and len(colors) > 50, page  # text and the theme's colours: not blank
            assert max(n for n, _ in colors) < 0.97 * 1280 * 900, page  # not one colour with a few stray pixels
