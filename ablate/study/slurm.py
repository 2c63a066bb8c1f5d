"""`python -m ablate.sweep FILE --slurm N`: the study as a SLURM job array of N tasks, each the same sweep command
run as a pool of forked workers on its node, all sharing one study through a storage the nodes reach.

Submitted through `sbatch` itself (the script generated here, piped to `sbatch --parsable`), not submitit: it adds
no dependency; the script is plain text shown in full (`--slurm-script`) and kept beside the logs, so it can be
read, edited and submitted again by hand; and ablate's engine already shares one study among any number of
processes started by the same command, so a job array of that command is all it takes (submitit's pickled
function calls and result files would add nothing the storage does not already do).
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from ablate.errors import ConfigError, did_you_mean

SLURM_KEYS = ("partition", "time", "cpus_per_task", "gpus_per_task", "mem", "account", "setup", "extra")
FLAGS = {  # key of the sweep file's slurm: mapping -> its sbatch flag
    "partition": "--partition",
    "time": "--time",
    "cpus_per_task": "--cpus-per-task",
    "gpus_per_task": "--gpus-per-task",
    "mem": "--mem",
    "account": "--account",
}
SHORT_FLAGS = {"partition": "-p", "time": "-t", "cpus_per_task": "-c", "account": "-A"}
OWN_FLAGS = ("--array", "--output", "--chdir", "--export", "--parsable", "--wrap", "-a", "-o", "-D")  # ablate's
ONE_TASK_FLAGS = ("--ntasks", "--ntasks-per-node", "--nodes")  # a task runs one command, on one node
# sweep flags a task does not repeat: (flag, takes a value); --storage reaches tasks as $ABLATE_STORAGE
SUBMIT_FLAGS = {"--slurm": 1, "--slurm-option": 1, "--slurm-script": 0, "--wait": 0, "--storage": 1, "--workers": 1}


# --- settings: the sweep file's slurm: mapping and --slurm-option KEY=VALUE ----------------------------------


def check_section(where: str, raw) -> dict:
    """The `slurm:` mapping of a sweep file, checked: known keys only (an unknown one named with the closest),
    and values sbatch takes; `where` prefixes each message (the file)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}slurm must be a mapping with keys {', '.join(SLURM_KEYS)}; got {raw!r}")
    return {key: check_value(where, key, value) for key, value in raw.items()}


def check_value(where: str, key: str, value):
    """One setting: `setup` and `extra` lists of lines or flags, the others one word or number."""
    if key not in SLURM_KEYS:
        raise ConfigError(
            f"{where}unknown key slurm.{key}{did_you_mean(key, SLURM_KEYS, 'slurm.')}; valid: {', '.join(SLURM_KEYS)}"
        )
    if key in ("setup", "extra"):
        lines = [value] if isinstance(value, str) else value
        if not isinstance(lines, list) or not all(isinstance(v, str) and "\n" not in v for v in lines):
            raise ConfigError(f"{where}slurm.{key} must be a list of one-line strings; got {value!r}")
        return [check_extra(where, flag) for flag in lines] if key == "extra" else lines
    if key in ("cpus_per_task", "gpus_per_task"):
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if type(value) is not int or value < 1:
            raise ConfigError(f"{where}slurm.{key} must be a positive integer; got {value!r}")
        return value
    if key == "time" and not isinstance(value, str):  # YAML reads 4:00:00 as 14400, which sbatch takes as minutes
        raise ConfigError(f'{where}slurm.time must be a quoted string, e.g. "4:00:00" or "1-00:00:00"; got {value!r}')
    if (
        not isinstance(value, (str, int))
        or isinstance(value, bool)
        or not str(value).strip()
        or any(c.isspace() for c in str(value))
    ):
        raise ConfigError(
            f"{where}slurm.{key} must be one word, e.g. {'16G' if key == 'mem' else 'gpu'}; got {value!r}"
        )
    return str(value)


def check_extra(where: str, flag: str) -> str:
    """One `extra` sbatch flag as it would follow #SBATCH (`--qos=high`, `--constraint a100`): neither one ablate
    sets, nor one a key of slurm: gives, nor one that makes a task more than one command on one node."""
    name = flag.split("=")[0].split()[0] if flag.strip() else ""
    if not name.startswith("-"):
        raise ConfigError(f"{where}slurm.extra: {flag!r} is not an sbatch flag, e.g. --qos=high")
    if name in OWN_FLAGS:
        raise ConfigError(f"{where}slurm.extra: ablate sets {name} itself (the array, its logs, its folder)")
    if name in ONE_TASK_FLAGS or name[:2] in ("-n", "-N") and not name.startswith("--"):
        raise ConfigError(
            f"{where}slurm.extra: {name}: each array task is one command on one node that forks its own workers "
            "(more nodes: more tasks, --slurm N; more CPUs for it: slurm.cpus_per_task)"
        )
    for key, own in FLAGS.items():
        if name == own or not name.startswith("--") and name[:2] == SHORT_FLAGS.get(key):
            raise ConfigError(f"{where}slurm.extra: give {name} as slurm.{key}")
    return flag


def settings(path: str | Path | None, options: list[str]) -> dict:
    """sbatch settings: the sweep file's `slurm:` mapping, then each `--slurm-option KEY=VALUE` (`setup` and
    `extra` add a line, the others replace)."""
    from ablate.errors import read_yaml

    raw = (read_yaml(path) or {}) if path else {}
    found = check_section(f"{path}: ", raw.get("slurm") if isinstance(raw, dict) else None)
    for option in options or ():
        key, eq, value = option.partition("=")
        key = key.strip().replace("-", "_")
        if not eq or not key:
            raise ConfigError(
                f"--slurm-option {option!r}: give KEY=VALUE, e.g. partition=gpu; keys: {', '.join(SLURM_KEYS)}"
            )
        value = check_value("--slurm-option: ", key, value)
        found[key] = found.get(key, []) + value if key in ("setup", "extra") else value
    return found


# --- the storage every task shares ---------------------------------------------------------------------------


def check_shared(url: str) -> None:
    """A storage the nodes of a cluster cannot share (a SQLite file) is a ConfigError naming the two that work."""
    if url.startswith("sqlite"):
        raise ConfigError(
            f"--slurm: the storage {url} is a SQLite file, which the tasks on other nodes cannot share "
            "(SQLite's locks do not hold over a network file system, and a node's own disk holds another study); "
            "use a PostgreSQL server the nodes reach (--storage postgresql+psycopg2://USER@HOST/DB, or the URL "
            "with its password in $ABLATE_STORAGE) or a journal on the shared file system (--storage "
            "journal:///PATH/study.log)"
        )


def password(url: str) -> str | None:
    """The password in a storage URL (as SQLAlchemy reads it: %-escapes decoded), if any."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).password
    except Exception:  # a journal path, or another URL SQLAlchemy does not read: no password
        return None


def masked(url: str) -> str:
    """The storage URL with its password as ***."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True) if password(url) else url


def holds_password(text: str, url: str) -> bool:
    """True when `text` holds the password of `url`, as written in it or %-decoded."""
    written = url.rpartition("@")[0].partition("//")[2].partition(":")[2]
    return any(secret and f":{secret}@" in text for secret in (password(url), written))


# --- the script ---------------------------------------------------------------------------------------------


def task_argv(argv: list[str]) -> list[str]:
    """`argv` of the submitting command without the flags only it takes (SUBMIT_FLAGS, also as `--flag=value` or
    abbreviated as argparse allows): what each task repeats."""
    out, skip = [], 0
    for arg in argv:
        if skip:
            skip -= 1
            continue
        name, eq, _ = arg.partition("=")
        flag = submit_flag(name) if arg.startswith("--") else None
        if flag is None:
            out.append(arg)
        elif not eq:
            skip = SUBMIT_FLAGS[flag]
    return out


def submit_flag(name: str) -> str | None:
    """The SUBMIT_FLAGS flag that `name` is or abbreviates (argparse took it, so a prefix names one), or None."""
    if name in SUBMIT_FLAGS:
        return name
    matches = [flag for flag in SUBMIT_FLAGS if flag.startswith(name)]
    return matches[0] if len(matches) == 1 else None


def script(study: str, tasks: int, found: dict, argv: list[str], url: str, workers) -> str:
    """The sbatch script of the array: N tasks, each `python -m ablate.sweep ARGV --workers W` in this folder, the
    storage from $ABLATE_STORAGE (never written here), each task's log in runs/<study>/slurm/%A_%a.out."""
    command = shlex.join([sys.executable, "-m", "ablate.sweep", *argv, "--workers", str(workers)])
    directives = [
        f"--job-name=ablate-{study}",
        f"--array=0-{tasks - 1}",
        f"--output={log_pattern(study)}",
        f"--chdir={Path.cwd()}",
        "--export=ALL",
        *(f"{FLAGS[key]}={found[key]}" for key in FLAGS if key in found),
    ]
    lines = [
        "#!/bin/bash",
        f"# ablate study {study!r}: {tasks} task(s), each the same sweep as a pool of workers on its node",
        f"# storage: {masked(url)}",
        "#   each task reads it from $ABLATE_STORAGE, which sbatch passes on from where it ran (--export=ALL);",
        "#   it is never written here, so a password stays out of this file and of ps",
        "# python: the interpreter that submitted (setup lines prepare its environment: modules, variables)",
        *(f"#SBATCH {shlex.quote(d)}" for d in directives),
        *(f"#SBATCH {flag}" for flag in found.get("extra", ())),  # as written in the sweep file
        'if [ -z "${ABLATE_STORAGE:-}" ]; then',
        '  echo "ABLATE_STORAGE is not set: export it to the study\'s storage URL before sbatch" >&2',
        "  exit 2",
        "fi",
        *found.get("setup", ()),
        'echo "task ${SLURM_ARRAY_TASK_ID} of job ${SLURM_ARRAY_JOB_ID} on $(hostname): '
        'CPUs ${SLURM_CPUS_PER_TASK:-${SLURM_CPUS_ON_NODE:-?}}, GPUs ${CUDA_VISIBLE_DEVICES:-none}"',
        f"exec {command}",
    ]
    text = "\n".join(lines) + "\n"
    if holds_password(text, url):  # the storage URL among the sweep's own arguments: never into a file
        raise ConfigError(
            "--slurm: the storage password would be written into the job script; give the storage "
            "URL only by --storage or $ABLATE_STORAGE"
        )
    return text


def log_pattern(study: str) -> str:
    """Where each task logs, relative to the folder the array runs in (%A: the array's job id, %a: the task)."""
    return f"runs/{study}/slurm/%A_%a.out"


# --- inside a task: its allocation ---------------------------------------------------------------------------


def allocated_cpus() -> int | None:
    """CPUs SLURM gave this task ($SLURM_CPUS_PER_TASK, else $SLURM_CPUS_ON_NODE); None outside a SLURM job."""
    if "SLURM_JOB_ID" not in os.environ:
        return None
    for name in ("SLURM_CPUS_PER_TASK", "SLURM_CPUS_ON_NODE"):
        if os.environ.get(name, "").isdigit() and int(os.environ[name]) > 0:
            return int(os.environ[name])
    return None


def allocated_bytes() -> int | None:
    """Memory SLURM gave this task ($SLURM_MEM_PER_NODE, or $SLURM_MEM_PER_CPU times its CPUs; MB); None when it
    set no limit or outside a SLURM job."""
    if "SLURM_JOB_ID" not in os.environ:
        return None
    if os.environ.get("SLURM_MEM_PER_NODE", "").isdigit():
        return int(os.environ["SLURM_MEM_PER_NODE"]) * 2**20
    if os.environ.get("SLURM_MEM_PER_CPU", "").isdigit():
        return int(os.environ["SLURM_MEM_PER_CPU"]) * (allocated_cpus() or 1) * 2**20
    return None
