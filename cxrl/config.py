"""Typed configuration: pydantic models with a description on every field, loaded from YAML.

Every component defines its own ``Config(ConfigModel)``; a YAML file may name a
``base:`` file (relative to itself) whose values it overrides, so experiments are
small overrides of a base. Unknown keys are errors, so typos never pass silently.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

T = TypeVar("T", bound="ConfigModel")


class ConfigModel(BaseModel):
    """Base for all configs: strict keys, validated on assignment, documented fields."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

    @classmethod
    def from_yaml(cls: type[T], path: str | Path, overrides: dict[str, Any] | None = None) -> T:
        """Load ``path`` (following ``base:`` chains), apply dotted ``overrides``, validate."""
        data = read_yaml_with_bases(Path(path))
        for key, value in (overrides or {}).items():
            set_dotted(data, key, value)
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ValueError(f"invalid config {path}:\n{exc}") from exc

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    @classmethod
    def describe(cls) -> str:
        """One line per field: name, type, default, description (for `--help` and docs)."""
        lines = []
        for name, field in cls.model_fields.items():
            ann = getattr(field.annotation, "__name__", str(field.annotation))
            lines.append(f"{name} ({ann}, default {field.default!r}): {field.description or ''}")
        return "\n".join(lines)


def read_yaml_with_bases(path: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = path.resolve()
    if path in _seen:
        raise ValueError(f"config base cycle: {' -> '.join(map(str, _seen + (path,)))}")
    if not path.is_file():
        raise ValueError(f"config file not found: {path}")
    with open(path) as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    base = data.pop("base", None)
    if base is None:
        return data
    merged = read_yaml_with_bases(path.parent / base, _seen + (path,))
    return deep_merge(merged, data)


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """``set_dotted(d, "rl.lr", 1e-4)`` sets ``d["rl"]["lr"]``."""
    *parents, leaf = key.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"cannot set {key!r}: {part!r} is not a mapping")
    node[leaf] = value
