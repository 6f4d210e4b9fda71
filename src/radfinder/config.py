"""Typed configs: pydantic models loaded from YAML, with `--set a.b=c` overrides.

The resolved config (after overrides) is what every run writes next to its outputs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from .errors import ConfigError


def read_resource_or_file(path: str | Path | None, resource: str, what: str) -> tuple[str, str]:
    """(text, where) of a user file, or of the package resource `resource` (e.g. "resources/ontology.yaml") when
    `path` is None; `what` names it in the error and in `where` ("built-in <what>")."""
    if path is None:
        return resources.files("radfinder").joinpath(resource).read_text(encoding="utf-8"), f"built-in {what}"
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} file not found: {p}")
    return p.read_text(encoding="utf-8"), str(p)

M = TypeVar("M", bound=BaseModel)


def parse_override(item: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (["a","b","c"], value); the value is parsed as YAML so `3`, `true`, `[1,2]` keep their type."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key.path=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {item!r}: value is not valid YAML ({exc})") from exc
    return key.split("."), value


def apply_overrides(data: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    out = json.loads(json.dumps(dict(data)))  # deep copy of plain data
    for item in overrides:
        path, value = parse_override(item)
        node = out
        for part in path[:-1]:
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a mapping")
            node = nxt
        node[path[-1]] = value
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def build_config(model: type[M], data: Mapping[str, Any], overrides: Iterable[str] = (), source: str = "") -> M:
    merged = apply_overrides(data, overrides)
    try:
        return model.model_validate(merged)
    except ValidationError as exc:
        where = f" in {source}" if source else ""
        raise ConfigError(f"invalid config{where}:\n{exc}") from exc


def load_config(model: type[M], path: str | Path | None, overrides: Iterable[str] = ()) -> M:
    data = load_yaml(path) if path is not None else {}
    return build_config(model, data, overrides, source=str(path or "defaults"))


def dump_config(cfg: BaseModel, path: str | Path) -> None:
    """Write the resolved config as YAML (atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    tmp.replace(path)
