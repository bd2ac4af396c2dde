"""Checkpoints: round trip, atomicity under a crash mid-save, validation errors, RNG states."""

import json
import random

import numpy as np
import pytest
import torch

from mambaadv2_ref import checkpoint as ck
from mambaadv2_ref.config_tools import config_diff

META = {"model": "mambaadv2", "model_config": {"d_state": 4, "plan": [1, 2]}}


def _trained(seed=0):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    opt = torch.optim.AdamW(net.parameters(), lr=0.1)
    net(torch.randn(5, 4)).pow(2).sum().backward()
    opt.step()
    return net, opt


def test_round_trip_weights_optimizer_and_meta(tmp_path):
    net, opt = _trained()
    ck.save_checkpoint(tmp_path, net, opt, step=7, meta={**META, "history": [{"loss": 1.0}]})
    got = ck.load_checkpoint(tmp_path, model_name="mambaadv2", model_config=META["model_config"],
                             with_optimizer=True)
    assert got.step == 7 and got.meta["history"] == [{"loss": 1.0}]
    for k, v in net.state_dict().items():
        assert torch.equal(got.state[k], v)
    fresh = torch.optim.AdamW(_trained(1)[0].parameters(), lr=0.1)
    fresh.load_state_dict(got.optimizer_state)
    for a, b in zip(fresh.state.values(), opt.state.values(), strict=True):
        assert all(torch.equal(a[k], b[k]) for k in b)
    # nothing pickled: only JSON and safetensors files
    assert {p.suffix for p in tmp_path.iterdir()} == {".json", ".safetensors"}


def test_crash_during_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    net, opt = _trained()
    ck.save_checkpoint(tmp_path, net, opt, step=1, meta=META)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    files_before = sorted(p.name for p in tmp_path.iterdir())
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)

    def crash(tensors, path):  # writes half a file, then the process "dies"
        with open(path, "wb") as f:
            f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(ck, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        ck.save_checkpoint(tmp_path, net, opt, step=2, meta=META)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == files_before  # temp file removed
    got = ck.load_checkpoint(tmp_path, with_optimizer=True)
    assert got.step == 1 and all(torch.equal(got.state[k], v) for k, v in before.items())

    # a crash while replacing the manifest (after the new tensor files exist) is also harmless
    monkeypatch.setattr(ck.os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk")))
    with pytest.raises(OSError):
        ck.save_checkpoint(tmp_path, net, opt, step=3, meta=META)
    monkeypatch.undo()
    assert ck.load_checkpoint(tmp_path).step == 1
    ck.save_checkpoint(tmp_path, net, opt, step=4, meta=META)  # and the orphans go
    assert len(list(tmp_path.glob("*.safetensors"))) == 2


def test_next_save_removes_previous_step_files(tmp_path):
    net, opt = _trained()
    ck.save_checkpoint(tmp_path, net, opt, step=1, meta=META)
    ck.save_checkpoint(tmp_path, net, opt, step=2, meta=META)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["checkpoint.json", "optimizer-step0000002.safetensors",
                     "weights-step0000002.safetensors"]


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint.json is missing"):
        ck.load_checkpoint(tmp_path / "nowhere")
    net, _ = _trained()
    ck.save_checkpoint(tmp_path, net, None, step=0, meta=META)
    with pytest.raises(ValueError, match="holds model 'mambaadv2', not 'patchcore'"):
        ck.load_checkpoint(tmp_path, model_name="patchcore")
    with pytest.raises(ValueError, match="d_state: 4 -> 8"):
        ck.load_checkpoint(tmp_path, model_config={"d_state": 8, "plan": [1, 2]})
    # compute-only settings (a checkpoint from before checkpoint_matrix existed, another scan
    # backend) load: they change how the model runs, not what its weights mean
    assert ck.load_checkpoint(tmp_path, model_config={**META["model_config"], "backend": "torch",
                                                      "checkpoint_matrix": False}).step == 0
    weights = next(tmp_path.glob("weights-*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    with pytest.raises(ValueError, match="SHA-256"):
        ck.load_checkpoint(tmp_path)
    with pytest.raises(ValueError, match="meta\\['model'\\]"):
        ck.save_checkpoint(tmp_path, net, None, step=0, meta={"model": "resnet"})
    manifest = tmp_path / "checkpoint.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "model": "unet"}))
    with pytest.raises(ValueError, match="'unet' is not one of"):
        ck.load_checkpoint(tmp_path)


def test_rng_state_round_trip_through_json():
    state = json.loads(json.dumps(ck.rng_state()))
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    ck.set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a


def test_config_diff_lists_changed_and_absent_keys():
    assert config_diff({"a": (1, 2)}, {"a": [1, 2]}) == []
    assert config_diff({"a": 1, "b": 2}, {"a": 1, "c": 3}) == [
        "b: 2 -> <absent>", "c: <absent> -> 3"]
