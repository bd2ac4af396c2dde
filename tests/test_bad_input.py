"""Bad input never gives a silent wrong result (issue 12): one test per case.

Every test writes its own tiny real files with PIL in tmp_path; none needs a dataset on disk.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from mambaadv2_ref.scans import backends


def _write_stub_mamba_ssm(root: Path) -> None:
    """A mamba_ssm package as a CPU machine or a failed build leaves it: a kernel module imports,
    then the package's __init__ raises for the missing compiled Mamba-1 extension."""
    triton = root / "mamba_ssm" / "ops" / "triton"
    triton.mkdir(parents=True)
    (root / "mamba_ssm" / "__init__.py").write_text(
        "__version__ = '0.0-stub'\n"
        "from mamba_ssm.ops.triton import ssd_combined  # noqa: F401\n"
        "raise ModuleNotFoundError(\"No module named 'selective_scan_cuda'\",\n"
        "                          name='selective_scan_cuda')\n")
    (root / "mamba_ssm" / "ops" / "__init__.py").write_text("")
    (triton / "__init__.py").write_text("")
    (triton / "ssd_combined.py").write_text("def mamba_chunk_scan_combined(*args):\n"
                                            "    raise AssertionError('never called')\n")


def test_mamba_ssm_without_its_cuda_extension_is_reported_not_raised(tmp_path, monkeypatch):
    _write_stub_mamba_ssm(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m == "mamba_ssm" or m.startswith("mamba_ssm.")]:
        monkeypatch.delitem(sys.modules, name)
    backends._load.cache_clear()
    try:
        report = backends.available_backends()
    finally:
        backends._load.cache_clear()
        for name in [m for m in sys.modules if m == "mamba_ssm" or m.startswith("mamba_ssm.")]:
            del sys.modules[name]
    assert report["torch"][0]
    for kernel in ("mamba_ssm_s6", "mamba_ssm_ssd", "mamba_ssm_mamba3"):
        ok, reason = report[kernel]
        assert not ok and "selective_scan_cuda" in reason, (kernel, reason)
