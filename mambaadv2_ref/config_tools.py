"""Settings read and compared: `--set key=value` overrides, typed by the dataclass field they
set, and the difference of two configs (what a resumed run or a loaded checkpoint checks).

Typing (`coerce_setting`): a bool field takes true/false/1/0 (any case) and nothing else; an int
field an integer (not 1.5, not True); a float field a finite number; `X | None` also takes
none/null; tuples and lists a Python literal of their element type; a str field the text as
given. A value of the wrong type is an error naming the key and the type it expects.
"""

from __future__ import annotations

import ast
import json
import math
import types
import typing

from mambaadv2_ref.config import COMPUTE_SETTINGS


def parse_sets(pairs: list[str] | None) -> dict:
    """Parse `--set key=value` pairs; values are Python literals (1, 0.5, True, [1, 2]) or text.

    Args:
        pairs: strings "key=value".

    Returns:
        dict key -> value.
    """
    out = {}
    for pair in pairs or []:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects key=value, got {pair!r}")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        out[key.strip()] = value
    return out


_TRUE, _FALSE = ("true", "1"), ("false", "0")


def _type_name(tp) -> str:
    if typing.get_origin(tp) is None and hasattr(tp, "__name__"):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _coerce(value, tp):
    """`value` (text from the command line, or an already typed Python value) as type `tp`;
    raises ValueError when it is not one."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and (value is None or str(value).strip().lower() in
                                   ("none", "null")):
            return None
        # try the strict kinds before str, which takes any text
        for option in sorted((a for a in args if a is not type(None)), key=lambda a: a is str):
            try:
                return _coerce(value, option)
            except ValueError:
                continue
        raise ValueError
    if tp is bool:
        text = str(value).strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise ValueError
    if tp is int:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, int):
            return value
        text = str(value).strip()
        if not text.lstrip("+-").isdigit():
            raise ValueError
        return int(text)
    if tp is float:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
        if not math.isfinite(number):
            raise ValueError
        return number
    if tp is str:
        return str(value)
    container = origin or tp
    if container in (tuple, list, dict):
        if isinstance(value, str):
            value = ast.literal_eval(value)
        if container in (tuple, list) and isinstance(value, (tuple, list)):
            element = args[0] if args else None
            items = [_coerce(v, element) for v in value] if element not in (None, ...) else value
            return container(items)
        if container is dict and isinstance(value, dict):
            return value
        raise ValueError
    return value  # a type without a rule (e.g. Any): as given


def coerce_setting(key: str, value, tp):
    """Convert one `--set` value to the type of the field `key`.

    Args:
        key: field name (for the message). value: text or a typed value. tp: the field's type.

    Returns:
        the value as that type.

    Raises:
        ValueError: "--set key=value: expected <type>", naming the key.
    """
    try:
        return _coerce(value, tp)
    except (ValueError, SyntaxError, TypeError):
        expected = "true/false/1/0" if tp is bool else _type_name(tp)
        raise ValueError(f"--set {key}={value}: expected {expected}") from None


def field_types(cls) -> dict[str, object]:
    """{field name: resolved type} of a dataclass (string annotations evaluated)."""
    return typing.get_type_hints(cls)


class _Absent:
    def __repr__(self) -> str:
        return "<absent>"


def config_diff(stored: dict, wanted: dict) -> list[str]:
    """List the keys where two config dicts differ (compared as JSON), as 'key: a -> b'."""
    stored, wanted = json.loads(json.dumps(stored)), json.loads(json.dumps(wanted))
    absent = _Absent()
    keys = sorted(set(stored) | set(wanted))
    return [f"{k}: {stored.get(k, absent)!r} -> {wanted.get(k, absent)!r}" for k in keys
            if k not in stored or k not in wanted or stored[k] != wanted[k]]


def model_config_diff(stored: dict, wanted: dict) -> list[str]:
    """`config_diff` of two model configs, ignoring `config.COMPUTE_SETTINGS` (how the model is
    computed, not what its weights mean: a checkpoint written with another scan backend, or
    before a compute setting existed, still loads)."""
    def identity(config: dict) -> dict:
        return {k: v for k, v in config.items() if k not in COMPUTE_SETTINGS}

    return config_diff(identity(stored), identity(wanted))
