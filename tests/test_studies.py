"""Studies (chapters 12-13): ablation table, speed grid and resolution scaling run end to end on
tiny sizes on the CPU; their files hold what the book reads. No timing is asserted."""

import json

import pytest
import torch

from mambaadv2_ref.data import make_tiny_dataset
from mambaadv2_ref.evaluate import METRIC_KEYS
from mambaadv2_ref.model.factory import build_model
from mambaadv2_ref.studies import ablations, scaling, speed
from mambaadv2_ref.timing import saved_for_backward_bytes, seconds_per_call

TINY_MODEL = ["--set", "image_size=64", "--set", "batch_size=2", "--set", "pretrained=False"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("data"), image_size=64, num_train=4)


def test_ablation_table_and_resume(data, tmp_path, monkeypatch):
    # a small model keeps this fast: the profile's widths are overridden for every ablation
    small = {"dims": (16, 8, 8, 8), "headdim": 8, "d_state": 4}
    for name in ("recurrence_only", "no_position"):
        monkeypatch.setitem(ablations.ABLATIONS, name, (
            "mambaadv2", {**ablations.ABLATIONS[name][1], **small}, ablations.ABLATIONS[name][2]))
    out = tmp_path / "abl"
    argv = ["--out", str(out), "--data", str(data), "--profile", "tiny", "--steps", "2",
            "--device", "cpu", "--only", "recurrence_only,no_position", *TINY_MODEL]
    assert ablations.main(argv) == 0
    table = json.loads((out / "ablations.json").read_text())
    assert [r["ablation"] for r in table["rows"]] == ["recurrence_only", "no_position"]
    for row in table["rows"]:
        assert row["steps"] == 2
        assert all(0.0 <= row[k] <= 1.0 for k in METRIC_KEYS)
    assert "| recurrence_only |" in (out / "ablations.md").read_text()
    # a second call finds both rows done and trains nothing
    mtime = (out / "recurrence_only" / "checkpoint.json").stat().st_mtime
    assert ablations.main(argv) == 0
    assert (out / "recurrence_only" / "checkpoint.json").stat().st_mtime == mtime


def test_unknown_ablation_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        ablations.main(["--out", str(tmp_path), "--steps", "1", "--only", "v2,nope"])
    assert "nope" in capsys.readouterr().err


def test_speed_grid_records_every_combination(tmp_path):
    rows = speed.speed_grid("tiny", device="cpu", iters=1, batch_size=1)
    assert len(rows) == len(speed.MODELS) * 2 * len(speed.GRID_PRECISIONS)
    for row in rows:
        if row["backend"] == "mamba_ssm":  # no GPU here: recorded with its reason
            assert row["skipped"]
        else:
            assert row["train_images_per_s"] > 0 and row["infer_images_per_s"] > 0
    speed.plot_speed(rows, tmp_path / "speed.png")
    assert (tmp_path / "speed.png").stat().st_size > 0


def test_scaling_rows_and_growth_exponent(tmp_path):
    assert scaling.main(["--out", str(tmp_path), "--profile", "tiny", "--sizes", "64,96",
                         "--batch-size", "1", "--iters", "1", "--device", "cpu"]) == 0
    result = json.loads((tmp_path / "scaling.json").read_text())
    assert {r["decoder"] for r in result["rows"]} == set(scaling.DECODERS)
    assert all(r["train_s"] > 0 for r in result["rows"])
    assert set(result["growth_exponent_train"]) == set(scaling.DECODERS)
    assert (tmp_path / "scaling.png").exists()


def test_growth_exponent_recovers_known_powers():
    rows = [{"tokens": n, "train_s": 3e-6 * n**2} for n in (100, 400, 1600)]
    assert scaling.growth_exponent(rows) == pytest.approx(2.0)
    rows = [{"tokens": n, "train_s": 5e-4 * n} for n in (100, 400, 1600)]
    assert scaling.growth_exponent(rows) == pytest.approx(1.0)
    # a flat overhead at small sizes, then quadratic: only the largest sizes show the power
    rows = [{"tokens": t, "train_s": max(1.0, (t / 1e4) ** 2)} for t in (1e3, 2e3, 1e4, 2e4, 4e4)]
    assert scaling.growth_exponent(rows) < 1.5
    assert scaling.growth_exponent(rows, largest=3) == pytest.approx(2.0)


def test_seconds_per_call_counts_calls():
    calls = []
    seconds_per_call(lambda: calls.append(1), torch.device("cpu"), warmup=2, iters=3, repeats=2)
    assert len(calls) == 2 + 3 * 2


def test_saved_for_backward_bytes_counts_each_storage_once():
    a = torch.randn(1000, requires_grad=True)
    assert saved_for_backward_bytes(lambda: torch.exp(a)) == 4000       # exp keeps its output
    assert saved_for_backward_bytes(lambda: a * a) == 4000              # one storage, twice
    with torch.no_grad():
        assert saved_for_backward_bytes(lambda: torch.exp(a)) == 0


def test_block_checkpointing_keeps_less_for_backward():
    images = torch.randn(1, 3, 64, 64)
    kept = {}
    for name, flags in (("none", dict(checkpoint_matrix=False)), ("matrix", {}),
                        ("block", dict(checkpoint_block=True))):
        torch.manual_seed(0)
        net = build_model("mambaadv2", "tiny", pretrained=False, image_size=64, **flags)
        kept[name] = saved_for_backward_bytes(lambda net=net: net(images))
    assert kept["block"] < kept["matrix"] < kept["none"]
