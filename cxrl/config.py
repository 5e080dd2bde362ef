"""Typed configuration: pydantic models with a description on every field, loaded from YAML.

Every component defines its own ``Config(ConfigModel)``; a YAML file may name a
``base:`` file (relative to itself) whose values it overrides, so experiments are
small overrides of a base. Unknown keys are errors, so typos never pass silently.

The one loader and the one override syntax, for every command (``cxrl train``, ``cxrl demo``,
``cxrl reproduce``, ``cxrl pretrain generator``) and benchmark:

- :meth:`ConfigModel.load` takes a config's name (a YAML file in the class's ``config_dir``) or a
  YAML path, follows its ``base:`` chain (deep merge), then applies dotted overrides;
- overrides are ``KEY=VALUE`` strings (``--set rl.epochs=3``, :func:`add_set_argument`), parsed by
  :func:`parse_overrides` alone: dotted keys, each value read as YAML (``3`` an int, ``1e-3`` a
  float, ``true`` a bool, ``null`` None, ``{align: 1.0}`` a mapping, anything else a string).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

T = TypeVar("T", bound="ConfigModel")


class ConfigModel(BaseModel):
    """Base for all configs: strict keys, validated on assignment, documented fields."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

    config_dir: ClassVar[Path | None] = None  # where this kind's named configs live (NAME.yaml)
    config_kind: ClassVar[str] = "config"  # what a name is called in errors ("RL preset", ...)
    # said after an unknown name or unknown keys: another kind of config this one may be taken for
    config_note: ClassVar[str] = ""

    @classmethod
    def load(cls: type[T], name_or_path: str | Path, overrides: Overrides = None) -> T:
        """A config by name (``config_dir/NAME.yaml``) or YAML path, with dotted overrides (a mapping
        of dotted keys to values, or ``KEY=VALUE`` strings as ``--set`` takes them)."""
        return cls.from_yaml(cls.resolve(name_or_path), overrides)

    @classmethod
    def resolve(cls, name_or_path: str | Path) -> Path:
        """The YAML file of a name in ``config_dir``, or the path itself (one with a suffix, or a file)."""
        path = Path(name_or_path)
        if path.suffix or path.is_file() or cls.config_dir is None:
            return path
        named = cls.config_dir / f"{name_or_path}.yaml"
        if not named.is_file():
            raise ValueError(
                f"unknown {cls.config_kind} {str(name_or_path)!r}; choose one of {cls.names()} or give a YAML "
                f"path{cls._note()}"
            )
        return named

    @classmethod
    def names(cls) -> list[str]:
        """The named configs of this kind (the stems of ``config_dir/*.yaml``)."""
        return sorted(p.stem for p in cls.config_dir.glob("*.yaml")) if cls.config_dir else []

    @classmethod
    def from_yaml(cls: type[T], path: str | Path, overrides: Overrides = None) -> T:
        """Load ``path`` (following ``base:`` chains), apply dotted ``overrides``, validate."""
        return cls._validated(read_yaml_with_bases(Path(path)), overrides, str(path))

    @classmethod
    def from_overrides(cls: type[T], overrides: Overrides = None) -> T:
        """The defaults with dotted overrides (a command given ``--set`` but no config file)."""
        return cls._validated({}, overrides, "from --set")

    @classmethod
    def _validated(cls: type[T], data: dict[str, Any], overrides: Overrides, source: str) -> T:
        for key, value in as_overrides(overrides).items():
            set_dotted(data, key, value)
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            unknown_keys = any(e["type"] == "extra_forbidden" for e in exc.errors())
            note = cls._note().removeprefix("; ") if unknown_keys else ""
            raise ValueError(f"invalid config {source}:\n{exc}" + (f"\n({note})" if note else "")) from exc

    @classmethod
    def _note(cls) -> str:
        return f"; {cls.config_note}" if cls.config_note else ""

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


_EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
Overrides = Mapping[str, Any] | Iterable[str] | None  # dotted key -> value, or KEY=VALUE strings


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``["rl.epochs=3", "rewards.url=grpc://h:1"]`` -> ``{"rl.epochs": 3, "rewards.url": "grpc://h:1"}``.

    The one parser of ``KEY=VALUE`` overrides: the key is dotted, the value is read as YAML (so
    ``3`` is an int, ``1e-3`` a float, ``true`` a bool, ``null`` None, ``{align: 1.0}`` a mapping). A later item
    overrides an earlier one with the same key.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ValueError(f"override {item!r} must look like KEY=VALUE, e.g. rl.epochs=3")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ValueError(f"override {item!r}: VALUE is not valid YAML ({exc})") from exc
        if isinstance(parsed, str) and _EXPONENT_FLOAT.fullmatch(value.strip()):
            parsed = float(parsed)  # YAML 1.1 reads 1e-3 (no dot) as a string
        out[key] = parsed
    return out


def as_overrides(overrides: Overrides) -> dict[str, Any]:
    """Dotted overrides from a mapping (as is) or from ``KEY=VALUE`` strings (:func:`parse_overrides`)."""
    if overrides is None:
        return {}
    if isinstance(overrides, Mapping):
        return dict(overrides)
    if isinstance(overrides, str):
        raise TypeError(f"overrides must be a mapping or a list of KEY=VALUE strings, got {overrides!r}")
    return parse_overrides(overrides)


def dotted(model: type[ConfigModel], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Overrides of ``model`` with nested blocks written as dotted keys: ``{"sampling": {"num_steps":
    4}}`` -> ``{"sampling.num_steps": 4}``, so a block sets its fields and keeps the others (a mapping
    given to a field that is itself a mapping, like ``rewards.weights``, stays whole)."""
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        sub = _submodel(model, key)
        if sub is not None and isinstance(value, Mapping):
            out.update({f"{key}.{k}": v for k, v in dotted(sub, value).items()})
        else:
            out[key] = value
    return out


def _submodel(model: type[ConfigModel], key: str) -> type[ConfigModel] | None:
    """The ConfigModel class of the field at dotted ``key`` of ``model`` (None: not a sub-config)."""
    for part in key.split("."):
        field = model.model_fields.get(part)
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, ConfigModel)):
            return None
        model = annotation
    return model


def add_set_argument(parser: argparse.ArgumentParser, example: str = "rl.epochs=3") -> None:
    """The ``--set KEY=VALUE`` option every command shares (repeatable; several after one ``--set``)."""
    parser.add_argument(
        "--set",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a config field by its dotted key, e.g. --set {example} (VALUE is read as YAML; "
        "repeatable)",
    )


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
