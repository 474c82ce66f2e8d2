"""Typed values for config dataclasses from YAML, JSON or command-line strings, checked key by key.

Works for any flat dataclass whose fields are bool, int, float, str or dict (optionally `| None`):
`TrainConfig` and every family's options section.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing

from ltm.core.errors import ConfigError


def field_type(cls: type, name: str) -> tuple[type, bool]:
    """(underlying type, whether None is allowed) of dataclass `cls`'s field `name`."""
    hint = typing.get_type_hints(cls)[name]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0], True
    return hint, False


def field_default(f: dataclasses.Field):
    """The default value of a dataclass field (calling its factory)."""
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got '{text}'")


def _parse_json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"expected a JSON object like '{{\"num_components\": 8}}', got '{text}' "
                         f"({err.msg})") from None
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got '{text}'")
    return value


def convert(cls: type, name: str, value):
    """Convert `value` (from YAML, JSON or a flag string) to the type of `cls`'s field `name`.

    Raises:
        ValueError: naming what was expected.
    """
    base, optional = field_type(cls, name)
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null")):
        if optional:
            return None
        raise ValueError("expected a value, got none")
    if base is bool:
        return value if isinstance(value, bool) else _parse_bool(str(value))
    if base is dict:
        return value if isinstance(value, dict) else _parse_json_object(str(value))
    if base is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(f"expected an integer, got {value!r}")
        try:
            return int(value) if not isinstance(value, str) else int(value.replace("_", ""))
        except (TypeError, ValueError):  # TypeError: a list or a mapping
            raise ValueError(f"expected an integer, got {value!r}") from None
    if base is float:
        try:
            return float(value)  # YAML reads '3e-4' as a string
        except (TypeError, ValueError):
            raise ValueError(f"expected a number, got {value!r}") from None
    if not isinstance(value, (str, int, float)):
        raise ValueError(f"expected a string, got {value!r}")
    return str(value)


def unknown_key(key: str, choices, source: str, help_hint: str) -> ConfigError:
    """The error for an unknown key, suggesting the closest known one."""
    close = difflib.get_close_matches(str(key), list(choices), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else f"; {help_hint}"
    return ConfigError(f"unknown key '{key}' in {source}{hint}")


def coerce_fields(cls: type, values: dict, source: str, prefix: str = "",
                  help_hint: str = "see python -m ltm.train --help.") -> dict:
    """Check every key of `values` against `cls`'s fields (dashes allowed) and convert its value.

    Args:
        prefix: Shown before each key in messages (e.g. "ponderlm2.").

    Raises:
        ConfigError: naming the key, `source` and what was expected.
    """
    names = {f.name for f in dataclasses.fields(cls)}
    out = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name not in names:
            raise unknown_key(f"{prefix}{key}", [prefix + n for n in names], source, help_hint)
        try:
            out[name] = convert(cls, name, value)
        except ValueError as err:
            raise ConfigError(f"bad value for '{prefix}{key}' in {source}: {err}.") from None
    return out
