"""The scan benchmark: every method runs on small shapes, ratios follow from the timings, the
JSON is written after every measurement, and a wrong scan name is named. No timing is asserted."""

import json

import pytest

from mambaadv2_ref.studies.scan_bench import _ratios, load_table, run_scan_bench

SHAPES = [dict(scan="ssd", batch=1, length=40, heads=2, headdim=4, d_state=4, chunk=16),
          dict(scan="mamba3", batch=1, length=40, heads=2, headdim=4, d_state=8, chunk=16),
          dict(scan="s6", batch=1, length=40, heads=1, headdim=4, d_state=4)]


def test_bench_runs_every_method_and_saves_json(tmp_path):
    out = tmp_path / "bench.json"
    result = run_scan_bench("cpu", shapes=SHAPES, out_path=out, reps=1, compile_chunked=False,
                            scans=("ssd", "s6"))
    assert [e["shape"]["scan"] for e in result["shapes"]] == ["ssd", "s6"]
    for entry in result["shapes"]:
        assert entry["methods"]["sequential"]["ms"] > 0
        assert entry["methods"]["chunked_eager"]["ms"] > 0
        assert "error" in entry["methods"]["mamba_ssm"]          # no GPU kernel here
        assert entry["ratios"]["sequential_over_chunked_eager"] > 0
    assert json.loads(out.read_text())["shapes"] == json.loads(json.dumps(result["shapes"]))
    rows = load_table(out)
    assert [(r["scan"], r["method"]) for r in rows][:3] == [
        ("ssd", "sequential"), ("ssd", "chunked_eager"), ("ssd", "mamba_ssm")]
    assert all(("ms" in r) != ("note" in r) for r in rows)


def test_ratios_compare_like_with_like():
    methods = {"sequential": {"ms": 300.0, "batch": 4}, "chunked_eager": {"ms": 20.0, "batch": 4},
               "chunked_compile": {"ms": 10.0, "batch": 4}, "mamba_ssm": {"ms": 2.0, "batch": 4}}
    assert _ratios(methods) == {
        "sequential_over_chunked_eager": 15.0, "sequential_over_chunked_compile": 30.0,
        "chunked_eager_over_chunked_compile": 2.0, "chunked_eager_over_mamba_ssm": 10.0,
        "chunked_compile_over_mamba_ssm": 5.0}
    methods["sequential"]["batch"] = 1                           # timed at a smaller batch
    assert "sequential_over_chunked_eager" not in _ratios(methods)


def test_unknown_scan_is_named():
    with pytest.raises(ValueError, match="nope"):
        run_scan_bench("cpu", shapes=SHAPES, scans=("nope",))
