"""Sweep values as arguments of a user's LightningCLI (jsonargparse): a sequence written "6,12,18" or [6, 12, 18]
for any list- or tuple-typed argument, as the parser's own type takes it, and an item of a list in the config
(`trainer.callbacks.2...`, `trainer.callbacks.SwapNeck...`) reached by its index or its class name."""

from __future__ import annotations

import copy
import importlib
import inspect
import json
from collections.abc import Callable

import yaml

from ablate.errors import ConfigError

SCALARS = (str, int, float, bool, type(None))


def override_pairs(overrides) -> list[tuple[str, object]]:
    """The sweep's overrides as (dotted key, value text); one that is not `key=value` (`--key=value`) as ("", arg)."""
    pairs = []
    for override in overrides:
        key, eq, value = override.removeprefix("--").partition("=")
        if eq and key and not any(c.isspace() for c in key):
            pairs.append((key, value))
        else:
            pairs.append(("", override if override.startswith("--") else f"--{override}"))
    return pairs


def trial_pairs(params: dict, rows: dict) -> list[tuple[str, object]]:
    """(dotted key, value) of a trial's values, a named row's (experiments: the `row` key) as the keys it sets."""
    return [
        (k, v)
        for key, value in params.items()
        for k, v in (rows[value].items() if key == "row" and rows else [(key, value)])
    ]


def sequence_items(value) -> list | None:
    """The list a comma string spells ("6,12,18" -> [6, 12, 18], "a,b" -> ["a", "b"]; a lone number too:
    "6" -> [6]); None for anything else (a list, a number, "sum", "{...}", "[...]")."""
    if not isinstance(value, str) or value.strip()[:1] in ("", "[", "{", "(", '"', "'"):
        return None
    try:
        items = yaml.safe_load(f"[{value}]")
    except yaml.YAMLError:
        return None
    if not all(isinstance(item, SCALARS) for item in items):
        return None  # "a: b, c" is a mapping, not a list of scalars
    return items if "," in value or type(items[0]) in (int, float) else None


def encode_lists(space, cli: bool):
    """A LightningCLI sweep's space with each YAML list among a key's choices as the comma string Optuna can store
    ([6, 12, 18] -> "6,12,18"), which the project's parser's types turn back; a built-in sweep's as it is."""
    if not cli or not isinstance(space, dict):
        return space
    return {
        key: {**spec, "choices": [comma_text(c) for c in spec["choices"]]}
        if isinstance(spec, dict) and isinstance(spec.get("choices"), list)
        else spec
        for key, spec in space.items()
    }


def comma_text(choice):
    """[6, 12, 18] -> "6,12,18" where that reads back as the same list; any other choice as it is."""
    if not isinstance(choice, list) or not choice or not all(isinstance(x, SCALARS) for x in choice):
        return choice
    text = ",".join(cli_value(x) for x in choice)
    try:
        return text if yaml.safe_load(f"[{text}]") == choice else choice
    except yaml.YAMLError:
        return choice


def coerce(pairs: list, accepts: Callable[[list], bool], base: dict) -> list:
    """`pairs` with each comma string (or lone number) as its list where its key refuses the string and takes the
    list: the parser's own type decides, so a str-typed argument keeps "a,b". `accepts(pairs)` parses the base
    config with `pairs`; each such value is tried with the pairs that hold no such value (a class_path among them),
    so that a refusal is its own key's. Refused either way, it stays a string, unless `base` (the resolved config
    the pairs apply to) holds a list at its key: the parser then tells what is wrong with the list (its length)."""
    fixed = [(k, v) for k, v in pairs if not k or sequence_items(v) is None]
    out = []
    for key, value in pairs:
        items = sequence_items(value) if key else None
        if items is not None and not accepts([*fixed, (key, value)]):
            if accepts([*fixed, (key, items)]) or isinstance(value_at(base, key), list):
                value = items
        out.append((key, value))
    return out


def cli_value(value) -> str:
    """A value as a command-line value: strings as they are, anything else as JSON (which is YAML)."""
    return value if isinstance(value, str) else json.dumps(value)


def cli_arguments(pairs: list, resolved: dict | None) -> list[str]:
    """`--key=value` per pair. A key that reaches into a list of `resolved` (the config the pairs apply to), as
    `trainer.callbacks.2.init_args.x` or `trainer.callbacks.SwapNeck.init_args.x`, sets that item in a copy of the
    list, which goes whole as one argument, where the first key into it was; the rest of the list stays as it is."""
    args, lists = [], {}  # lists: {list key: (its place in args, [(key, value), ...])}
    for key, value in pairs:
        at = list_key(resolved, key) if key else None
        if at is None:
            args.append(f"--{key}={cli_value(value)}" if key else value)
            continue
        if at not in lists:
            lists[at] = (len(args), [])
            args.append("")  # the whole list, below
        lists[at][1].append((key, value))
    for at, (place, items) in lists.items():
        value = copy.deepcopy(value_at(resolved, at))
        for key, v in sorted(items, key=lambda kv: kv[0].count(".")):  # a class_path before its init_args
            value = put(value, key[len(at) + 1 :].split("."), v, key, at)
        args[place] = f"--{at}={json.dumps(value)}"
    return args


def list_key(resolved: dict | None, key: str) -> str | None:
    """The dotted key of the list in `resolved` that `key` reaches into ('trainer.callbacks' for
    'trainer.callbacks.2.init_args.x'); None when it reaches no list (or names one, to set it whole)."""
    node, parts = resolved, key.split(".")
    for i, part in enumerate(parts):
        if isinstance(node, list):
            return ".".join(parts[:i])
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return None


def value_at(config, key: str):
    """The value at dotted `key` of `config` (a list's item by index or class name); None where there is none."""
    try:
        return walk(config, key.split("."), key)
    except ConfigError:
        return None


def walk(node, parts: list[str], key: str):
    """The value at `parts` of `node`, dict keys or list items (see `select`)."""
    if not parts:
        return node
    if isinstance(node, list):
        i, used = select(node, parts[0], key, "")
        return walk(node[i], parts[1:] if used else parts, key)
    return walk(node.get(parts[0]), parts[1:], key) if isinstance(node, dict) else None


def put(node, parts: list[str], value, key: str, at: str):
    """`node` with `value` at `parts` (dict keys; in a list an index or a class name, see `select`); a class_path
    changed keeps the init_args the new class takes, as jsonargparse does for `--x.class_path=...`."""
    if not parts:
        return value
    if isinstance(node, list):
        i, used = select(node, parts[0], key, at)
        node[i] = put(node[i], parts[1:] if used else parts, value, key, at)
        return node
    node = node if isinstance(node, dict) else {}
    if parts == ["class_path"] and node.get("class_path") != value:
        return {"class_path": value, "init_args": carried_args(value, node.get("init_args"))}
    node[parts[0]] = put(node.get(parts[0]), parts[1:], value, key, at)
    return node


def carried_args(class_path, init_args) -> dict:
    """The `init_args` that the class at `class_path` takes (all of them if it takes **kwargs; none if it does not
    import, which the parser then reports)."""
    try:
        module, _, name = class_path.rpartition(".")
        params = inspect.signature(getattr(importlib.import_module(module), name)).parameters
    except (ImportError, AttributeError, ValueError, TypeError):
        return {}
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return dict(init_args or {})
    return {k: v for k, v in (init_args or {}).items() if k in params}


def select(items: list, part: str, key: str, at: str) -> tuple[int, bool]:
    """(index, True) of the item `part` names: an index (0-based) or a class name its class_path is or ends with;
    (0, False) for a key that names no item (trainer.callbacks.init_args.x) of a one-item list. Otherwise a
    ConfigError naming `key` and listing the items."""
    where = f"{key}: {at} in the base config lists {listing(items)}"
    if part.isdigit():
        if int(part) >= len(items):
            raise ConfigError(f"{where}; it has no item {part} (items count from 0)")
        return int(part), True
    named = [i for i, item in enumerate(items) if isinstance(item, dict) and is_class(item.get("class_path"), part)]
    if len(named) == 1:
        return named[0], True
    if named:
        raise ConfigError(f"{where}; {part} is items {', '.join(map(str, named))}: name one by its index, {at}.<index>")
    if part not in ("class_path", "init_args"):
        raise ConfigError(f"{where}; none is a {part} (name an item by its index or its class, e.g. {at}.0)")
    if len(items) != 1:
        raise ConfigError(f"{where}; say which: {at}.<index>.{part}... or {at}.<class name>.{part}...")
    return 0, False


def listing(items: list) -> str:
    """'0: lightning.pytorch.callbacks.ModelCheckpoint; 1: ...': each item's index and class_path (or value)."""
    text = [f"{i}: {item.get('class_path', item) if isinstance(item, dict) else item}" for i, item in enumerate(items)]
    return "; ".join(text) or "nothing"


def is_class(class_path, name: str) -> bool:
    """Whether `class_path` is `name` or ends with `.name`."""
    return isinstance(class_path, str) and (class_path == name or class_path.endswith(f".{name}"))
