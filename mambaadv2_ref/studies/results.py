"""The results files of the studies: where they are committed, what each one records about the
machine, how they are read back and shown as a markdown table.

The studies write JSON (with date and hardware); the book reads the committed copies in
`book/results/` of the repository (`RESULTS_DIR`), and its trained detectors, exported files
(`model.export`), in `book/detectors/` (`DETECTORS_DIR`, `committed_detector`). Every study
exports a `load_table(path)` that turns its JSON into rows (a list of flat dicts), and
`tables.markdown_table(rows)` renders any of them.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

from mambaadv2_ref.scans import available_backends

RESULTS_DIR = Path(__file__).resolve().parents[2] / "book" / "results"
DETECTORS_DIR = Path(__file__).resolve().parents[2] / "book" / "detectors"
DETECTORS_ENV = "MAMBAADV2_REF_DETECTORS"  # another folder holding the book's detectors


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask; os.cpu_count() where the platform
    has none): a container can see all of a host's cores and be allowed only a few."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def environment(device: torch.device | None = None) -> dict:
    """Date, host, library versions and scan backends, stored beside every measured result.

    Args:
        device: the device measured on (None: cuda when available, else cpu).
    """
    if device is None:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    env = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "device": str(device), "torch": torch.__version__, "python": platform.python_version(),
           "threads": torch.get_num_threads(),
           "backends": {k: list(v) for k, v in available_backends().items()}}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    else:
        env["cpu"] = platform.processor() or platform.machine()
    # the host's CPUs bound GPU runs too (data loading, kernel launches, compilation)
    env["cpu_count"] = os.cpu_count()
    env["usable_cpus"] = usable_cpus()
    env["load_average_1_5_15min"] = list(os.getloadavg())
    for package in ("triton", "mamba_ssm"):
        try:
            env[package] = version(package)
        except PackageNotFoundError:
            pass
    return env


def read_json(path) -> dict:
    """A study's JSON file; a missing or broken file raises naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"results file {path} does not exist")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"results file {path} is not valid JSON: {err}") from err


def committed_results(name: str, results_dir: Path | None = None) -> dict | None:
    """Load `book/results/<name>` (a JSON file) if it is committed, else None.

    Args:
        name: file name, e.g. "pipeline_results.json".
        results_dir: folder to read (None: `RESULTS_DIR`).

    Returns:
        the parsed JSON, or None when the file does not exist (the book then says so).
    """
    if Path(name).suffix != ".json":
        raise ValueError(f"name must be a .json file name, got {name!r}")
    path = Path(results_dir or RESULTS_DIR) / name
    return read_json(path) if path.is_file() else None


def committed_detector(name: str, device="cpu", detectors_dir: Path | None = None):
    """Load the trained detector `book/detectors/<name>.safetensors` if it is there, else None.

    The folder is `detectors_dir`, else `$MAMBAADV2_REF_DETECTORS`, else the repository's
    `book/detectors/` (absent where the package was installed from a wheel: the chapter then
    says so and uses its live run instead).

    Returns:
        (model in eval mode on `device`, its manifest) or None. A file that is there but
        broken (checksum, encoder weights) raises the loader's ValueError: nothing is skipped.
    """
    from mambaadv2_ref.model.export import load_exported

    folder = Path(detectors_dir or os.environ.get(DETECTORS_ENV) or DETECTORS_DIR)
    path = folder / f"{name}.safetensors"
    return load_exported(path, device=device) if path.is_file() else None


def list_results(results_dir: Path | None = None) -> list[str]:
    """Names of the JSON result files committed under `book/results/`, sorted."""
    folder = Path(results_dir or RESULTS_DIR)
    return sorted(p.name for p in folder.glob("*.json")) if folder.is_dir() else []
