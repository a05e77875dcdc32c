"""Config files: a YAML file (or a run's ``config.json``) sets any field of a script's config.

Keys are the fields' names, the flags without their dashes, written flat or under their
section (``run:``, ``ppo:``, ``tracking:``), as a run's ``config.json`` nests them::

    # configs/demo.yaml
    algorithm: ppo        # optional; a config for another algorithm is refused
    seed: 2
    lr: 3.0e-4
    ppo:
      epochs: 4

An unknown key is an error that names the closest valid one. ``config``, ``resume`` and
``stop_after`` belong to one invocation, not to a run: a file may hold them as null (a
run's ``config.json`` does), and the command line sets them.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Example:
    ...     lr: float = 1e-3
    ...     steps: int = 30
    >>> apply_settings(Example(), {"lr": "3e-4"}, source="x.yaml")
    Example(lr=0.0003, steps=30)
    >>> apply_settings(Example(), {"step": 4}, source="x.yaml")
    Traceback (most recent call last):
    ...
    rlm.errors.ConfigError: x.yaml: unknown setting 'step' (did you mean 'steps'?)
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from rlm.errors import ConfigError

T = TypeVar("T")
INVOCATION_KEYS = ("config", "resume", "stop_after")
"""Fields that belong to one command, not to the run's settings."""


def read_settings_file(path: Path) -> dict[str, Any]:
    """The mapping in a YAML or JSON file (JSON is read as JSON, anything else as YAML)."""
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        values = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        kind = "JSON" if path.suffix == ".json" else "YAML"
        detail = " ".join(str(exc).split())  # the parser's message, on one line
        raise ConfigError(f"{path} is not valid {kind}: {detail}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path} must hold a mapping of setting names to values")
    return values


@dataclasses.dataclass(frozen=True)
class _Leaf:
    path: tuple[str, ...]
    annotation: Any


def leaves(config_type: type) -> dict[str, _Leaf]:
    """Every field that is not a section, by name, with its path through the sections."""
    found: dict[str, _Leaf] = {}

    def walk(cls: type, prefix: tuple[str, ...]) -> None:
        hints = get_type_hints(cls)
        for f in dataclasses.fields(cls):
            annotation = hints[f.name]
            if dataclasses.is_dataclass(annotation):
                walk(annotation, (*prefix, f.name))  # type: ignore[arg-type]
                continue
            if f.name in found:
                raise TypeError(f"{config_type.__name__}: two fields named {f.name!r}")
            found[f.name] = _Leaf((*prefix, f.name), annotation)

    walk(config_type, ())
    return found


def sections(config_type: type) -> set[str]:
    """The names of the nested dataclass fields (``run``, ``tracking``, ``ppo``, ...)."""
    names: set[str] = set()

    def walk(cls: type) -> None:
        hints = get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[f.name]):
                names.add(f.name)
                walk(hints[f.name])

    walk(config_type)
    return names


def apply_settings(
    config: T, values: Mapping[str, Any], *, source: str, algorithm: str | None = None
) -> T:
    """A copy of ``config`` with the settings in ``values`` (from the file ``source``)."""
    config_type = type(config)
    known = leaves(config_type)
    groups = sections(config_type)
    result = copy.deepcopy(config)

    def assign(key: str, value: Any) -> None:
        if key == "algorithm" and "algorithm" not in known:
            if algorithm is not None and value != algorithm:
                raise ConfigError(
                    f"{source} is a config for {value!r}; run it with experiments/{value}.py"
                )
            return
        if key in groups and isinstance(value, Mapping):
            for inner, inner_value in value.items():
                assign(str(inner), inner_value)
            return
        if key not in known:
            close = difflib.get_close_matches(key, [*known, *groups], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{source}: unknown setting {key!r}{hint}")
        if key in INVOCATION_KEYS:
            if key != "config" and value is not None:
                flag = "--" + key.replace("_", "-")
                raise ConfigError(f"{source}: {key} belongs on the command line ({flag})")
            return
        leaf = known[key]
        target = result
        for name in leaf.path[:-1]:
            target = getattr(target, name)
        setattr(target, leaf.path[-1], _convert(value, leaf.annotation, key, source))

    for key, value in values.items():
        assign(str(key), value)
    return result


def _convert(value: Any, annotation: Any, key: str, source: str) -> Any:
    """``value`` as the field's type, or a ConfigError naming the key and the type."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        options = get_args(annotation)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(value, option, key, source)
            except ConfigError:
                pass
        raise ConfigError(f"{source}: {key} = {value!r} is not a {_describe(annotation)}")
    if origin is Literal:
        if value not in get_args(annotation):
            choices = ", ".join(map(str, get_args(annotation)))
            raise ConfigError(f"{source}: {key} must be one of {choices}, got {value!r}")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: {key} must be true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: {key} must be an integer, got {value!r}")
        return value
    if annotation is float:
        # YAML reads 3e-4 (no dot) as text: accept any number written as text.
        try:
            if not isinstance(value, bool):
                return float(value)
        except (TypeError, ValueError):
            pass
        raise ConfigError(f"{source}: {key} must be a number, got {value!r}")
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: {key} must be text, got {value!r}")
        return value
    if annotation is Path:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: {key} must be a path, got {value!r}")
        return Path(value)
    raise TypeError(f"config files cannot set {key} of type {annotation!r}")


def _describe(annotation: Any) -> str:
    names = [getattr(a, "__name__", str(a)) for a in get_args(annotation) if a is not type(None)]
    return " or ".join(names) + (" or null" if type(None) in get_args(annotation) else "")


def changed_settings(config: object, reference: object) -> list[str]:
    """Names of the fields whose values differ between two configs of the same type."""
    names = []
    for name, leaf in leaves(type(config)).items():
        a, b = config, reference
        for part in leaf.path:
            a, b = getattr(a, part), getattr(b, part)
        if a != b:
            names.append(name)
    return names
