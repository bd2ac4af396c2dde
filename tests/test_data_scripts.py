"""data_scripts and data.download / data.visa, all offline: fast failure without network,
resume with HTTP Range (fake server), checksums, safe extraction, VisA conversion."""

import hashlib
import importlib.util
import io
import socket
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mambaadv2_ref.data import MVTecDataset, embedded
from mambaadv2_ref.data.download import (
    ChecksumError,
    DownloadError,
    download,
    extract,
    sha256_of,
)
from mambaadv2_ref.data.visa import convert_visa, read_split_csv

SCRIPTS = Path(__file__).resolve().parents[1] / "data_scripts"


def _script(name):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_offline_fails_fast_with_exit_code_2(tmp_path, capsys):
    url = f"http://127.0.0.1:{_closed_port()}/mvtec.tar.xz"
    code = _script("prepare_mvtec").main(["--out", str(tmp_path), "--url", url, "--timeout", "2"])
    assert code == 2
    assert "needs the internet" in capsys.readouterr().err
    code = _script("prepare_visa").main(["--out", str(tmp_path / "v"), "--url", url,
                                         "--timeout", "2"])
    assert code == 2


def test_unreachable_host_is_a_download_error(tmp_path, monkeypatch):
    def no_network(request, timeout):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    with pytest.raises(DownloadError, match=r"name resolution(.|\n)*put it at"):
        download("https://example.invalid/a.tar", tmp_path / "a.tar")


class _FakeResponse(io.BytesIO):
    def __init__(self, body: bytes, status: int):
        super().__init__(body)
        self.status = status
        self.headers = {"Content-Length": str(len(body))}


def _fake_server(monkeypatch, payload: bytes, honour_range: bool, seen: list):
    def urlopen(request, timeout):
        header = request.get_header("Range")
        seen.append(header)
        if header and honour_range:
            start = int(header.removeprefix("bytes=").rstrip("-"))
            return _FakeResponse(payload[start:], 206)
        return _FakeResponse(payload, 200)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)


@pytest.mark.parametrize("honour_range", [True, False])
def test_download_resumes_and_verifies(tmp_path, monkeypatch, honour_range):
    payload = np.random.default_rng(0).bytes(300_000)
    dest = tmp_path / "file.bin"
    (tmp_path / "file.bin.part").write_bytes(payload[:123_456])
    seen = []
    _fake_server(monkeypatch, payload, honour_range, seen)
    digest = hashlib.sha256(payload).hexdigest()
    assert download("http://fake/file.bin", dest, digest, progress=False) == dest
    assert seen == ["bytes=123456-"] and dest.read_bytes() == payload
    assert sha256_of(dest) == digest and not (tmp_path / "file.bin.part").exists()


def test_checksum_mismatch_keeps_bad_file(tmp_path, monkeypatch):
    _fake_server(monkeypatch, b"not the archive", True, [])
    with pytest.raises(ChecksumError, match="expected 00"):
        download("http://fake/x", tmp_path / "x", "00" * 32, progress=False)
    assert (tmp_path / "x.bad").read_bytes() == b"not the archive"
    assert not (tmp_path / "x").exists()


def test_extract_refuses_escaping_members(tmp_path):
    good, evil = tmp_path / "good.tar.gz", tmp_path / "evil.tar"
    with tarfile.open(good, "w:gz") as tf:
        data = b"hello"
        info = tarfile.TarInfo("cls/train/good/a.txt")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    extract(good, tmp_path / "out")
    assert (tmp_path / "out/cls/train/good/a.txt").read_bytes() == b"hello"
    with tarfile.open(evil, "w") as tf:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 0
        tf.addfile(info, io.BytesIO(b""))
    with pytest.raises(ValueError, match="outside"):
        extract(evil, tmp_path / "out2")


def _fake_visa(raw: Path) -> None:
    rows = ["object,split,label,image,mask"]
    rng = np.random.default_rng(0)
    for cls in ("candle", "pcb1"):
        for i in range(3):
            rel = f"{cls}/Data/Images/Normal/{i:04d}.JPG"
            (raw / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(raw / rel)
            rows.append(f"{cls},{'train' if i < 2 else 'test'},normal,{rel},")
        rel, mrel = f"{cls}/Data/Images/Anomaly/000.JPG", f"{cls}/Data/Masks/Anomaly/000.png"
        (raw / rel).parent.mkdir(parents=True, exist_ok=True)
        (raw / mrel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(raw / rel)
        mask = np.zeros((20, 30), np.uint8)
        mask[5:9, 4:10] = 7  # VisA masks carry label values, not 255
        Image.fromarray(mask).save(raw / mrel)
        rows.append(f"{cls},test,anomaly,{rel},{mrel}")
    (raw / "split_csv").mkdir(parents=True)
    (raw / "split_csv/1cls.csv").write_text("\n".join(rows) + "\n")


def test_visa_conversion_on_a_fake_tree(tmp_path, capsys):
    raw, out = tmp_path / "visa_raw", tmp_path / "visa"
    _fake_visa(raw)
    code = _script("prepare_visa").main(["--out", str(out), "--raw", str(raw)])
    assert code == 0 and "candle" in capsys.readouterr().out
    test = MVTecDataset(out, split="test", image_size=30)
    assert len(MVTecDataset(out, split="train")) == 4 and len(test) == 4
    bad = [i for i, s in enumerate(test.samples) if s.kind == "bad"]
    assert len(bad) == 2 and test[bad[0]]["mask"].sum() > 0
    saved = np.asarray(Image.open(out / "pcb1/ground_truth/bad/000_mask.png"))
    assert set(np.unique(saved)) == {0, 255} and (saved == 255).sum() == 24
    assert convert_visa(raw, tmp_path / "again")["pcb1"] == {"train": 2, "test_good": 1,
                                                             "test_bad": 1}


def test_visa_csv_errors(tmp_path):
    bad = tmp_path / "a.csv"
    bad.write_text("object,split,image\ncandle,train,x.JPG\n")
    with pytest.raises(ValueError, match="missing columns"):
        read_split_csv(bad)
    bad.write_text("object,split,label,image,mask\ncandle,test,anomaly,x.JPG,\n")
    with pytest.raises(ValueError, match="has no mask"):
        read_split_csv(bad)
    bad.write_text("object,split,label,image,mask\ncandle,train,normal,x.JPG,\n")
    with pytest.raises(ValueError, match="x.JPG"):
        convert_visa(tmp_path, tmp_path / "out", bad)


def test_build_embedded_script_refuses_non_empty(tmp_path, capsys):
    (tmp_path / "x").write_text("")
    assert _script("build_embedded").main(["--out", str(tmp_path)]) == 1
    assert "not empty" in capsys.readouterr().err


def test_build_embedded_script_builds_into_a_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(embedded, "CLASSES", embedded.CLASSES[3:4])
    monkeypatch.setattr(embedded, "IMAGE_SIZE", 32)
    monkeypatch.setattr(embedded, "NUM_TRAIN", 1)
    monkeypatch.setattr(embedded, "NUM_TEST_GOOD", 1)
    monkeypatch.setattr(embedded, "NUM_PER_DEFECT", 1)
    assert _script("build_embedded").main(["--out", str(tmp_path / "new")]) == 0
    assert "coins: train 1, test good 1, scratch 1" in capsys.readouterr().out
    assert embedded.is_complete(tmp_path / "new")
    monkeypatch.setattr(embedded, "NUM_TRAIN", 2)  # another recipe: the folder is stale
    assert not embedded.is_complete(tmp_path / "new")
