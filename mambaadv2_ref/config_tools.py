"""Settings read and compared: `--set key=value` overrides, and the difference of two configs
(what a resumed run or a loaded checkpoint checks)."""

from __future__ import annotations

import ast
import json

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
