"""Kept only while `model/decoder.py` imports from here: the config lives in
`mambaadv2_ref.config`. Delete this file once decoder.py imports `mambaadv2_ref.config`."""

from mambaadv2_ref.config import ModelConfig, modules_per_stage

__all__ = ["ModelConfig", "modules_per_stage"]
