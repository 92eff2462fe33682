"""Typed parameters: TOML files and ``--param KEY=VALUE`` overrides onto frozen dataclasses.

Unknown names and values of the wrong type are :class:`~nextclick.errors.ConfigError`\\ s that
name the parameter and what was expected; range checks live in each config's
``__post_init__``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Literal

from nextclick.errors import ConfigError

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parameters from a TOML file (top-level keys, or a ``[params]`` table)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    params = data.get("params", data)
    if not isinstance(params, dict):
        raise ConfigError(f"{path}: [params] must be a table")
    return params


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    """``["a=1", "layers=200/200"]`` -> ``{"a": "1", "layers": "200/200"}``."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--param {pair!r}: expected KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


def build_config(cls: type, *layers: dict[str, Any]) -> Any:
    """An instance of config dataclass ``cls`` from defaults overridden by each layer in turn.

    Values may be typed (from TOML) or strings (from the command line).
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for layer in layers:
        for key, raw in layer.items():
            if key not in fields:
                known = ", ".join(sorted(fields))
                raise ConfigError(f"unknown parameter {key!r}; known parameters: {known}")
            values[key] = coerce(key, raw, hints[key])
    return cls(**values)


def coerce(name: str, value: Any, hint: Any) -> Any:
    """``value`` (typed, or a command-line string) converted to type ``hint``."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            options = ", ".join(repr(c) for c in choices)
            raise ConfigError(f"parameter {name!r}: {value!r} is not one of {options}")
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in typing.get_args(hint):
            try:
                return coerce(name, value, option)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[-1])
    if origin is tuple:
        (item_type, _ellipsis) = typing.get_args(hint)
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    value = json.loads(text)
                except ValueError:
                    raise ConfigError(f"parameter {name!r}: {value!r} is not a list") from None
            else:
                value = [v for v in text.replace(",", "/").split("/") if v.strip()]
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"parameter {name!r}: expected a list, got {value!r}")
        return tuple(coerce(name, v, item_type) for v in value)
    if hint is type(None):
        if value is None or (isinstance(value, str) and value.lower() in {"none", "null", ""}):
            return None
        raise ConfigError(f"parameter {name!r}: {value!r} is not none")
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise ConfigError(f"parameter {name!r}: {value!r} is not a boolean (true/false)")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"parameter {name!r}: {value!r} is not an integer")
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"parameter {name!r}: {value!r} is not a number")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"parameter {name!r}: {value!r} is not a string")
    raise TypeError(f"unsupported parameter type {hint!r} for {name}")


def write_params(path: str | os.PathLike[str], params: dict[str, Any], comment: str = "") -> None:
    """Write parameters as a TOML file that ``--params`` reads (written whole or not at all)."""
    from nextclick.data.io import atomic_path

    lines = [f"# {line}" for line in comment.splitlines()]
    lines += [f"{key} = {_toml_value(key, value)}" for key, value in params.items()]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _toml_value(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return json.dumps(value)  # numbers and double-quoted strings are TOML as well
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(key, v) for v in value) + "]"
    if value is None:
        raise ConfigError(f"parameter {key!r}: TOML has no null; leave it out instead")
    raise ConfigError(f"parameter {key!r}: cannot write {type(value).__name__} to TOML")
