"""collect_gpu: the archives of the GPU sittings become the results files the book reads.

The training folder is made by real (tiny, CPU) runs laid out as `gpu_training.sh` lays them out;
the session folder holds parity JSONs and logs as `gpu_session.sh`'s three pytest processes write
them."""

import json
import shutil
import tarfile

import pytest

from mambaadv2_ref.data import make_tiny_dataset
from mambaadv2_ref.evaluate import METRIC_KEYS, evaluate
from mambaadv2_ref.studies import ablations, collect_gpu
from mambaadv2_ref.train import train
from mambaadv2_ref.train_config import TrainConfig

SMALL = {"dims": (16, 8, 8, 8), "headdim": 8, "d_state": 4}


@pytest.fixture(scope="module")
def training_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu_training")
    data = make_tiny_dataset(root / "data", image_size=64, num_train=4)
    sets = ["--set", "image_size=64", "--set", "batch_size=2", "--set", "pretrained=False"]
    for name in ("v2", "no_fft"):  # one process per ablation, each with its own table
        out = root / "w" / "ablations_bsdata" / name
        with pytest.MonkeyPatch.context() as mp:
            model, overrides, what = ablations.ABLATIONS[name]
            mp.setitem(ablations.ABLATIONS, name, (model, {**overrides, **SMALL}, what))
            assert ablations.main(["--out", str(out), "--data", str(data), "--profile", "tiny",
                                   "--steps", "2", "--device", "cpu", "--only", name, *sets]) == 0
    (root / "w" / "ablations_bsdata" / "no_position").mkdir()  # a run cut by its time box
    for name in ("paper_bsdata_1gpu", "throughput_1gpu_b16"):
        cfg = TrainConfig(out=str(root / "w" / name), data=str(data), profile="tiny", steps=4,
                          device="cpu", image_size=64, batch_size=2, pretrained=False,
                          log_every=2, model_overrides=dict(SMALL))
        train(cfg)
    evaluate(root / "w" / "paper_bsdata_1gpu", device="cpu")
    # a DDP run's manifest differs in world_size and per-GPU batch only
    ddp = root / "w" / "paper_bsdata_ddp2"
    shutil.copytree(root / "w" / "paper_bsdata_1gpu", ddp)
    manifest = json.loads((ddp / "checkpoint.json").read_text())
    manifest["train"].update(world_size=2, batch_size=1)
    (ddp / "checkpoint.json").write_text(json.dumps(manifest))
    (root / "w" / "setup.log").write_text("NVIDIA H100 80GB HBM3, 81559 MiB\n")
    return root / "w"


def test_collect_training_merges_ablations_and_summarises_ddp(training_folder, tmp_path):
    written = collect_gpu.collect_training(training_folder, tmp_path)
    table = json.loads((tmp_path / "ablations_bsdata_tiny_gpu.json").read_text())
    assert sorted(r["ablation"] for r in table["rows"]) == ["no_fft", "v2"]
    assert table["not_finished"] == ["no_position"]
    assert "| no_fft |" in (tmp_path / "ablations_bsdata_tiny_gpu.md").read_text()
    doc = json.loads(written["gpu_training"].read_text())
    runs = {r["run"]: r for r in doc["runs"]}
    assert set(runs) == {"paper_bsdata_1gpu", "paper_bsdata_ddp2", "throughput_1gpu_b16"}
    assert runs["paper_bsdata_ddp2"]["global_batch"] == 2
    assert all(k in runs["paper_bsdata_1gpu"] for k in METRIC_KEYS)
    assert "mAD" not in runs["throughput_1gpu_b16"]  # never evaluated: no metrics invented
    factor = doc["data_parallel"]["strong scaling (same global batch: 2 x 1 vs 1 x 2), "
                                   "images/s factor"]
    assert factor == pytest.approx(runs["paper_bsdata_ddp2"]["train_images_per_s"]
                                   / runs["throughput_1gpu_b16"]["train_images_per_s"])
    assert doc["data_parallel"]["mAD difference, DDP 2 x 1 minus one GPU 1 x 2 (points)"] == 0
    assert "| paper_bsdata_ddp2 | 2 | 2 x 1 |" in (tmp_path / "gpu_training.md").read_text()


def _parity(folder, name, results, log):
    (folder / name).mkdir(parents=True)
    doc = {"environment": {"gpu": "NVIDIA H100 80GB HBM3"}, "criterion": "bound",
           "results": results}
    (folder / name / "scans_gpu.json").write_text(json.dumps(doc))
    (folder / f"{name}.log").write_text(log)


def test_collect_session_merges_parity_and_draws_figures(tmp_path):
    src = tmp_path / "w"
    _parity(src, "parity_ssd", {"outcome": {"ssd(1)": "passed"}, "ssd_L1": {"out": {}}},
            "..\n======= 2 passed in 81.2s =======\n")
    _parity(src, "parity_mamba3", {"outcome": {"m3(1)": "AssertionError: beyond"}},
            "F\n1 failed in 50.0s\n")
    (src / "parity_s6").mkdir()
    (src / "parity_s6.log").write_text("..")  # cut by its time box: no summary line
    rows = [{"model": "mambaadv2", "backend": "torch", "precision": p, "profile": "paper",
             "device_name": "NVIDIA H100", "train_images_per_s": 10.0 + i,
             "infer_images_per_s": 30.0} for i, p in enumerate(("fp32", "bf16"))]
    rows.append({"model": "mambaad", "backend": "torch", "precision": "fp32", "error": "OOM"})
    (src / "speed.json").write_text(json.dumps({"environment": {}, "rows": rows}))
    scaling = [{"decoder": "mambaadv2", "size": s, "tokens": (s // 4) ** 2, "train_s": s / 1e3,
                "train_peak_memory_bytes": s * 2**20} for s in (128, 256)]
    (src / "scaling.json").write_text(json.dumps({"environment": {}, "rows": scaling}))
    archive = tmp_path / "gpu_session.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname=".")
    out = tmp_path / "results"
    assert collect_gpu.main(["session", str(archive), "--results", str(out)]) == 0
    parity = json.loads((out / "scans_gpu.json").read_text())
    assert parity["results"]["outcome"] == {"ssd(1)": "passed", "m3(1)": "AssertionError: beyond"}
    assert parity["processes"] == {"parity_mamba3": "1 failed in 50.0s",
                                   "parity_s6": "no summary line: the process was cut by its "
                                                "time box",
                                   "parity_ssd": "2 passed in 81.2s"}
    assert (out / "speed_paper_gpu.png").stat().st_size > 0
    assert (out / "scaling_paper_gpu.png").stat().st_size > 0


def test_collect_names_a_missing_archive(tmp_path, capsys):
    with pytest.raises(SystemExit):
        collect_gpu.main(["training", str(tmp_path / "nope.tgz")])
    assert "nope.tgz does not exist" in capsys.readouterr().err


def test_a_later_sitting_replaces_what_it_remeasures_and_keeps_the_rest(tmp_path):
    def sitting(name, date, rows):
        src = tmp_path / name
        src.mkdir()
        (src / "speed.json").write_text(json.dumps({"environment": {"date": date}, "rows": rows}))
        return src

    def speed_row(backend, ips):
        return {"model": "mambaadv2", "backend": backend, "precision": "fp32", "profile": "paper",
                "device_name": "H200", "train_images_per_s": ips, "infer_images_per_s": 2 * ips}

    out = tmp_path / "results"
    collect_gpu.collect_session(sitting("a", "day1", [speed_row("torch", 10.0),
                                                      speed_row("mamba_ssm", 30.0)]), out)
    collect_gpu.collect_session(sitting("b", "day2", [speed_row("torch", 12.0)]), out)
    rows = json.loads((out / "speed_paper_gpu.json").read_text())["rows"]
    assert [(r["backend"], r["train_images_per_s"], r["measured"]) for r in rows] == [
        ("mamba_ssm", 30.0, "day1"), ("torch", 12.0, "day2")]
