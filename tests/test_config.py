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


def test_seed_everything_repeats_and_checks():
    seed_everything(3)
    a = torch.rand(2)
    seed_everything(3)
    assert torch.equal(a, torch.rand(2))
    with pytest.raises(ValueError, match="seed"):
        seed_everything(-1)
