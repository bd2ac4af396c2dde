"""studies.live_run and studies.results: the live-run config, the committed-results reader and
the shared markdown table (no training here)."""

import json
from types import SimpleNamespace

import pytest
import torch

from mambaadv2_ref.studies import live_run as book_runs
from mambaadv2_ref.studies import results
from mambaadv2_ref.tables import markdown_table


def test_live_run_config_follows_the_profile(tmp_path):
    cfg = book_runs.live_run_config(tmp_path / "run", "tiny")
    assert cfg.steps == book_runs.LIVE_STEPS["tiny"] and cfg.profile == "tiny"
    assert cfg.resume and cfg.data is None and cfg.classes is None   # all embedded classes
    assert book_runs.live_run_config(tmp_path, "paper", steps=7).steps == 7
    with pytest.raises(ValueError, match="profile must be one of"):
        book_runs.live_run_config(tmp_path, "huge")


def test_committed_results_reads_or_says_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "RESULTS_DIR", tmp_path)
    assert results.committed_results("missing.json") is None
    assert results.list_results() == []
    (tmp_path / "bench.json").write_text(json.dumps({"date": "2026-11-27", "ms": 1.5}))
    (tmp_path / "notes.md").write_text("not a result")
    assert results.committed_results("bench.json") == {"date": "2026-11-27", "ms": 1.5}
    assert results.list_results() == ["bench.json"]
    with pytest.raises(ValueError, match=".json"):
        results.committed_results("notes.md")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match="broken.json"):
        results.read_json(tmp_path / "broken.json")


def test_markdown_table_columns_formats_and_missing_cells():
    rows = [{"model": "v2", "mAD": 0.9512, "steps": 300}, {"model": "v1", "note": "skipped"}]
    table = markdown_table(rows, formats={"mAD": ".1%"})
    assert table.splitlines() == ["| model | mAD | steps | note |", "|---|---|---|---|",
                                  "| v2 | 95.1% | 300 |  |", "| v1 |  |  | skipped |"]
    with pytest.raises(ValueError, match="rows"):
        markdown_table([])


def test_live_batch_fits_the_gpu(monkeypatch):
    """The paper profile's batch 16 on a big GPU; less on a 16 GB T4 (float32 there); none on
    the CPU or for tiny."""
    assert book_runs.live_batch_size("paper", "cpu") is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for gib, capability, expected in ((141, (9, 0), None), (80, (8, 0), None),
                                      (40, (8, 0), 13), (15, (7, 5), 3)):
        monkeypatch.setattr(torch.cuda, "get_device_properties",
                            lambda d, g=gib: SimpleNamespace(total_memory=g * 2**30))
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d, c=capability: c)
        assert book_runs.live_batch_size("paper", "cuda") == expected
    assert book_runs.live_batch_size("tiny", "cuda") is None
