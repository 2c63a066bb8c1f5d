"""W&B config columns of a study's runs: swept settings as scalars, under names W&B does not nest."""

from __future__ import annotations

from ablate.run.loggers import scalar


def swept_keys(space: dict, rows: dict | None = None) -> list[str]:
    """The dotted keys a study varies: its space's keys, a `row` key replaced by the keys its rows set."""
    keys = [k for k in space if k != "row"]
    if "row" in space:
        keys += sorted({k for row in (rows or {}).values() for k in row})
    return keys


def config_column(key: str) -> str:
    """The W&B config column that shows dotted key `key`: `model.neck.rates` -> `neck.rates`,
    `model.neck` -> `neck.name`, `optim.lr` -> `swept.optim/lr` (W&B reads dots in config keys as nesting)."""
    if key == "model.neck":
        return "neck.name"
    if key.startswith("model.neck."):
        return "neck." + key.removeprefix("model.neck.")
    return "swept." + key.replace(".", "/")


def swept_columns(flat_config: dict, keys) -> dict:
    """The swept settings outside `model.neck` (those are in `neck`) as scalars, for the `swept` config key."""
    return {k.replace(".", "/"): scalar(flat_config.get(k)) for k in keys if not config_column(k).startswith("neck.")}
