"""config: the profile table, the lr rule, the stage sizes, the names defined once."""

import pytest
import torch

from mambaadv2_ref import config
from mambaadv2_ref.config_tools import model_config_diff, parse_sets
from mambaadv2_ref.runtime import seed_everything


def test_profile_table_holds_run_settings_and_model_sizes():
    for name, row in config.PROFILES.items():
        cfg = config.preset(name)
        assert cfg.image_size == row.image_size and cfg.profile == name
        assert cfg.dims == tuple(row.model["dims"])
        assert row.to_dict() == {"name": name, "image_size": row.image_size,
                                 "batch_size": row.batch_size, "num_steps": row.num_steps,
                                 "lr": config.scaled_lr(row.batch_size)}
    assert config.get_profile("paper").lr == 0.005
    with pytest.raises(ValueError, match="profile must be one of"):
        config.get_profile("huge")


def test_lr_rule_and_stage_sizes():
    assert config.scaled_lr(32) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="global_batch"):
        config.scaled_lr(0)
    assert config.stage_sizes(256) == [(8, 8), (16, 16), (32, 32), (64, 64)]
    assert config.stage_sizes((64, 128), 2) == [(2, 4), (4, 8)]
    with pytest.raises(ValueError, match="multiples of 32"):
        config.stage_sizes(100)


def test_names_and_compute_settings():
    assert config.DETECTORS == (*config.MODELS, "patchcore")
    stored = config.preset("tiny").to_dict()
    assert model_config_diff(stored, {**stored, "backend": "torch", "matrix_impl":
                                      "materialised", "stack_scans": False}) == []
    assert model_config_diff({k: v for k, v in stored.items() if k != "stack_scans"},
                             stored) == []  # a config from before stack_scans existed
    assert model_config_diff(stored, {**stored, "d_state": 8}) == ["d_state: 16 -> 8"]
    with pytest.raises(TypeError, match="chunk_size must be a positive int"):
        config.preset("tiny", chunk_size=1.5)
    assert parse_sets(["matrix_impl=scan", "depths=(1, 1, 1, 1)"]) == {
        "matrix_impl": "scan", "depths": (1, 1, 1, 1)}


def test_compile_memory_budget_is_a_compute_setting_set_from_the_command_line():
    """`--set compile_memory_budget=0.5` (or 1, none) types as float | None and a checkpoint
    trained under one budget loads under another (or from before the setting existed)."""
    from mambaadv2_ref.config_tools import coerce_setting
    from mambaadv2_ref.model.detectors import model_config_fields

    tp = model_config_fields("mambaadv2")["compile_memory_budget"]
    for text, value in (("0.5", 0.5), ("1", 1.0), ("none", None), ("None", None)):
        (parsed,) = parse_sets([f"compile_memory_budget={text}"]).values()
        assert coerce_setting("compile_memory_budget", parsed, tp) == value
    for text in ("abc", "True"):
        (parsed,) = parse_sets([f"compile_memory_budget={text}"]).values()
        with pytest.raises(ValueError, match=f"--set compile_memory_budget={text}: expected"):
            coerce_setting("compile_memory_budget", parsed, tp)
    assert "compile_memory_budget" in config.COMPUTE_SETTINGS
    stored = config.preset("tiny", compile_mixer="default", compile_memory_budget=0.5).to_dict()
    assert stored["compile_memory_budget"] == 0.5
    assert model_config_diff(stored, config.preset("tiny").to_dict()) == []
    assert model_config_diff({k: v for k, v in stored.items()
                              if k != "compile_memory_budget"}, stored) == []


def test_seed_everything_repeats_and_checks():
    seed_everything(3)
    a = torch.rand(2)
    seed_everything(3)
    assert torch.equal(a, torch.rand(2))
    with pytest.raises(ValueError, match="seed"):
        seed_everything(-1)
