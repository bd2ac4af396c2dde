"""Training pipeline: learning-rate step, seeded data order, exact resume, settings checks."""

import pytest
import torch

from mambaadv2_ref.checkpoint import load_checkpoint
from mambaadv2_ref.data import make_tiny_dataset
from mambaadv2_ref.recipe import lr_plan, param_groups, step_lr
from mambaadv2_ref.sampler import StepBatchSampler
from mambaadv2_ref.train import train
from mambaadv2_ref.train_config import TrainConfig, config_from_sets

# the tiny profile shrunk further: 64 px, batch 2, random encoder (no weights needed), a narrow
# decoder with 2 scan directions
FAST = {"image_size": 64, "batch_size": 2, "pretrained": False, "log_every": 1}
SMALL_MODEL = {"dims": (16, 8, 8, 8), "headdim": 8, "d_state": 4, "num_directions": 2}




@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("data"), image_size=64, num_train=4)


def test_step_lr_single_decay_at_80_percent():
    lrs = [step_lr(t, 10, 1.0) for t in range(10)]
    assert lrs == [1.0] * 8 + [pytest.approx(0.1)] * 2


def test_param_groups_no_decay_on_1d():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    decay, no_decay = param_groups(net.parameters(), 1e-4)
    assert [p.dim() for p in decay["params"]] == [4] and no_decay["weight_decay"] == 0.0
    assert len(no_decay["params"]) == 3  # conv bias, BN weight and bias


def test_batches_are_a_function_of_seed_and_step():
    straight = list(StepBatchSampler(10, 3, 9, seed=5))
    resumed = list(StepBatchSampler(10, 3, 9, seed=5, start_step=4))
    assert resumed == straight[4:]
    assert all(len(b) == 3 for b in straight)  # drop_last: 3 full batches per epoch
    assert straight[:3] != straight[3:6]  # a new permutation every epoch
    assert sorted(sum(straight[:3], [])) != list(range(10))  # one image dropped per epoch
    shards = [list(StepBatchSampler(10, 2, 2, seed=5, rank=r, world_size=2)) for r in (0, 1)]
    assert not set(sum(shards[0], [])) & set(sum(shards[1], []))  # DDP ranks are disjoint
    with pytest.raises(ValueError, match="batch_size"):
        StepBatchSampler(3, 4, 1, seed=0)


def test_resume_gives_identical_weights(tmp_path, data):
    base = config_from_sets(TrainConfig(out=str(tmp_path / "straight"), data=str(data),
                                        steps=6, device="cpu"), {**FAST, **SMALL_MODEL},
                            set(SMALL_MODEL))
    train(base)
    split = TrainConfig(**{**base.__dict__, "out": str(tmp_path / "split"), "stop_at": 3})
    train(split)
    assert load_checkpoint(split.out).step == 3
    train(TrainConfig(**{**split.__dict__, "stop_at": None, "resume": True}))
    a, b = load_checkpoint(base.out, with_optimizer=True), load_checkpoint(split.out)
    assert b.step == 6 and a.state.keys() == b.state.keys()
    for k in a.state:
        assert torch.equal(a.state[k], b.state[k]), k
    assert [h["step"] for h in b.meta["history"]] == list(range(1, 7))
    assert b.meta["history"][-1]["lr"] == pytest.approx(0.1 * a.meta["train"]["lr"])
    with pytest.raises(ValueError, match="seed: 42 -> 7"):
        train(TrainConfig(**{**split.__dict__, "resume": True, "seed": 7}))


def test_config_from_sets_routes_and_rejects_keys():
    cfg = config_from_sets(TrainConfig(out="x"), {"lr": 0.1, "d_state": 8}, {"d_state"})
    assert cfg.lr == 0.1 and cfg.model_overrides == {"d_state": 8}
    with pytest.raises(ValueError, match="unknown key.*model config keys"):
        config_from_sets(TrainConfig(out="x"), {"nonsense": 1}, {"d_state"})


def test_bf16_only_where_the_device_computes_it(monkeypatch):
    from mambaadv2_ref.runtime import use_bf16

    cpu = torch.device("cpu")
    assert not use_bf16(cpu, "auto") and not use_bf16(cpu, "bf16")
    cuda = torch.device("cuda", 0)
    for capability, expected in (((7, 5), False), ((8, 0), True), ((9, 0), True)):  # T4, A100, H100
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d, c=capability: c)
        assert use_bf16(cuda, "auto") is expected
        assert use_bf16(cuda, "bf16") and not use_bf16(cuda, "fp32")
        assert not use_bf16(cuda, "tf32")  # float32 steps, TF32 matrix products
    with pytest.raises(ValueError, match="precision must be one of"):
        use_bf16(cpu, "fp16")


def test_tf32_matmuls_only_under_tf32_and_restored():
    from mambaadv2_ref.runtime import tf32_matmuls

    flags = torch.backends.cuda.matmul
    before = flags.allow_tf32
    try:
        flags.allow_tf32 = True  # a caller's own setting: fp32 steps still run in full float32
        with tf32_matmuls("fp32"):
            assert flags.allow_tf32 is False
        assert flags.allow_tf32 is True
        flags.allow_tf32 = False
        with tf32_matmuls("tf32"):
            assert flags.allow_tf32 is True
        assert flags.allow_tf32 is False
        with pytest.raises(ValueError, match="precision must be one of"), tf32_matmuls("tf16"):
            pass
    finally:
        flags.allow_tf32 = before


def test_train_runs_train_step(data, tmp_path, monkeypatch):
    """`train` makes one call of `train_step` per step (the step `bench_model` times)."""
    from mambaadv2_ref import train as train_module

    calls = []
    real = train_module.train_step

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_step", spy)
    cfg = TrainConfig(out=str(tmp_path / "run"), data=str(data), steps=2, device="cpu",
                      model_overrides=SMALL_MODEL, **FAST)
    train(cfg)
    assert len(calls) == 2


def test_lr_plan_matches_step_lr():
    plan = lr_plan(10, 1.0)
    assert plan == [{"from_step": 0, "lr": 1.0}, {"from_step": 8, "lr": pytest.approx(0.1)}]
    for t in range(10):
        assert step_lr(t, 10, 1.0) == (plan[1]["lr"] if t >= plan[1]["from_step"] else 1.0)


def test_extend_continues_a_finished_run_on_a_longer_schedule(tmp_path, data):
    cfg = config_from_sets(TrainConfig(out=str(tmp_path / "run"), data=str(data), steps=3,
                                       device="cpu"), {**FAST, **SMALL_MODEL}, set(SMALL_MODEL))
    train(cfg)
    longer = TrainConfig(**{**cfg.__dict__, "steps": 5, "resume": True})
    with pytest.raises(ValueError, match="num_steps.*add --extend"):
        train(longer)
    with pytest.raises(ValueError, match="not more than the 3 this run has done"):
        train(TrainConfig(**{**longer.__dict__, "steps": 3, "extend": True}))
    meta = train(TrainConfig(**{**longer.__dict__, "extend": True}))
    ckpt = load_checkpoint(cfg.out)
    assert ckpt.step == 5 and meta["train"]["num_steps"] == 5
    assert meta["train"]["lr_plan"] == lr_plan(5, meta["train"]["lr"])
    (old,) = meta["train"]["schedules"]
    assert old["num_steps"] == 3 and old["until_step"] == 3
    assert old["lr_plan"] == lr_plan(3, meta["train"]["lr"])
    assert [h["step"] for h in meta["history"]][-1] == 5


def test_balance_classes_reaches_the_sampler_and_a_resume_keeps_it(tmp_path, data, monkeypatch):
    """`--set balance_classes=true` gives the sampler every image's class; a resume cannot change
    it, and a checkpoint written before the setting existed is a run without it."""
    import json

    from mambaadv2_ref import train as train_module
    from mambaadv2_ref.data import MVTecDataset

    seen = []

    class Recording(train_module.StepBatchSampler):
        def __init__(self, *args, labels=None, **kwargs):
            seen.append(labels)
            super().__init__(*args, labels=labels, **kwargs)

    monkeypatch.setattr(train_module, "StepBatchSampler", Recording)
    cfg = config_from_sets(TrainConfig(out=str(tmp_path / "run"), data=str(data), steps=3,
                                       device="cpu", stop_at=1),
                           {**FAST, **SMALL_MODEL, "balance_classes": "true"}, set(SMALL_MODEL))
    assert train(cfg)["train"]["balance_classes"] is True
    classes = [s.cls for s in MVTecDataset(data, split="train", image_size=64).samples]
    assert seen[-1] == classes and len(set(classes)) == 2
    resume = TrainConfig(**{**cfg.__dict__, "stop_at": 2, "resume": True})
    with pytest.raises(ValueError, match="balance_classes: True -> False"):
        train(TrainConfig(**{**resume.__dict__, "balance_classes": False}))
    assert train(resume)["step"] == 2
    manifest = tmp_path / "run" / "checkpoint.json"
    meta = json.loads(manifest.read_text())
    del meta["train"]["balance_classes"]  # as written before the setting existed
    manifest.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="balance_classes: False -> True"):
        train(TrainConfig(**{**resume.__dict__, "stop_at": None}))
    last = train(TrainConfig(**{**resume.__dict__, "stop_at": None, "balance_classes": False}))
    assert last["step"] == 3 and seen[-1] is None


def test_history_records_the_time_spent_waiting_for_batches(tmp_path, data, monkeypatch):
    """Every logged window says how long the loop waited for its batches (data_wait_s, seconds
    per step): a loader that takes at least 0.2 s per batch shows at least that."""
    import time

    from mambaadv2_ref import train as train_module

    class SlowLoader(train_module.DataLoader):
        def __iter__(self):
            """The batches of DataLoader, each 0.2 s late. Implements: no equation."""
            for batch in super().__iter__():
                time.sleep(0.2)
                yield batch

    monkeypatch.setattr(train_module, "DataLoader", SlowLoader)
    cfg = config_from_sets(TrainConfig(out=str(tmp_path / "r"), data=str(data), steps=2,
                                       device="cpu", **FAST), SMALL_MODEL, set(SMALL_MODEL))
    meta = train_module.train(cfg)
    assert [h["step"] for h in meta["history"]] == [1, 2]
    assert all(h["data_wait_s"] >= 0.2 for h in meta["history"])
    seconds_per_step = [cfg.batch_size / h["images_per_s"] for h in meta["history"]]
    assert all(h["data_wait_s"] <= t for h, t in zip(meta["history"], seconds_per_step,
                                                     strict=True))  # a part of the step
