"""Peers from the ecosystem: anomalib's PatchCore and PaDiM, re-scored with our metric code.

anomalib is not a dependency of this package: the study creates its own virtual environment
(`--venv`, default ~/.cache/mambaadv2_ref/peers-venv) and `pip install anomalib` into it once.
For every (dataset, class, encoder) it then

1. writes the train and test images exactly as our pipeline feeds them (`MVTecDataset`, S x S
   resize, ImageNet normalisation) and our offline encoder's classifier weights
   (`model.encoder.create_backbone`) to a work folder: same inputs, same weights, no download;
2. runs `peers_worker.py` in that environment for each peer (anomalib's torch models with the
   weights injected; PatchCore with a 1 % coreset and 9 neighbours, PaDiM with all channels);
3. re-scores the saved raw scores and maps against our masks with `mambaadv2_ref.metrics`
   (seven metrics, mAD; percent), per class, averaged over the classes of the dataset.

Each peer fits one model per class (its own protocol); BSData has one class.

    python -m mambaadv2_ref.studies.peers --data DATA/bsdata \
        --encoders efficientnet_lite0,efficientnet_lite2 --json book/results/peers_bsdata_cpu.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from mambaadv2_ref.checkpoint import write_json
from mambaadv2_ref.data import MVTecDataset
from mambaadv2_ref.data.mvtec import list_classes
from mambaadv2_ref.evaluate import METRIC_KEYS
from mambaadv2_ref.metrics import aggregate, compute_metrics
from mambaadv2_ref.model.encoder import OFFLINE_WEIGHTS, create_backbone
from mambaadv2_ref.studies.encoders import dataset_root
from mambaadv2_ref.studies.results import environment

PEERS = ("patchcore", "padim")
WORKER = Path(__file__).with_name("peers_worker.py")
DEFAULT_VENV = Path.home() / ".cache" / "mambaadv2_ref" / "peers-venv"


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure_venv(venv: Path, package: str = "anomalib") -> str:
    """Create `venv` with `package` installed unless it already imports; return its version.

    Raises:
        RuntimeError: the installation failed (with pip's last lines).
    """
    python = venv_python(venv)
    probe = [str(python), "-c", f"import importlib.metadata as m; print(m.version('{package}'))"]
    if python.exists():
        done = subprocess.run(probe, capture_output=True, text=True)
        if done.returncode == 0:
            return done.stdout.strip()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run([str(python), "-m", "pip", "install", package], capture_output=True,
                         text=True)
    if pip.returncode != 0:
        raise RuntimeError(f"pip install {package} into {venv} failed:\n{pip.stderr[-2000:]}")
    return subprocess.run(probe, capture_output=True, text=True, check=True).stdout.strip()


def export_inputs(root: Path, cls: str, image_size: int, path: Path) -> MVTecDataset:
    """Write the normalised train and test images of `cls` to `path` (npz); return the test set."""
    def stack(split: str) -> tuple[MVTecDataset, np.ndarray]:
        dataset = MVTecDataset(root, classes=[cls], split=split, image_size=image_size)
        return dataset, torch.stack([dataset[i]["image"] for i in range(len(dataset))]).numpy()

    _, train = stack("train")
    test_set, test = stack("test")
    np.savez(path, train=train, test=test)
    return test_set


def export_weights(encoder: str, path: Path) -> None:
    """Write the full timm classifier state dict of `encoder` (our pretrained weights)."""
    torch.save(create_backbone(encoder, pretrained=True, features_only=False).state_dict(), path)


def run_worker(venv: Path, peer: str, encoder: str, inputs: Path, weights: Path, out: Path,
               coreset_ratio: float) -> dict:
    """Run `peers_worker.py` in the peers' environment; return its info (seconds, versions).

    Raises:
        RuntimeError: the worker failed (with its last output lines).
    """
    cmd = [str(venv_python(venv)), str(WORKER), "--peer", peer, "--encoder", encoder,
           "--inputs", str(inputs), "--weights", str(weights), "--out", str(out),
           "--coreset-ratio", str(coreset_ratio)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{peer} worker failed:\n{(done.stdout + done.stderr)[-3000:]}")
    return json.loads(np.load(out)["info"].item())


def rescore(maps_file: Path, test_set: MVTecDataset, cls: str) -> dict:
    """Our seven metrics and mAD (fractions) of a worker's raw scores and maps on `test_set`."""
    saved = np.load(maps_file)
    labels = np.array([test_set[i]["label"] for i in range(len(test_set))])
    masks = np.stack([test_set[i]["mask"][0].numpy() for i in range(len(test_set))])
    if saved["maps"].shape != masks.shape:
        raise ValueError(f"{maps_file}: maps {saved['maps'].shape} do not match the masks "
                         f"{masks.shape}")
    return compute_metrics(saved["scores"], labels, saved["maps"], masks.astype(np.uint8),
                           cls=cls)


def run_peers(data: str, encoder: str, peers: list[str], venv: Path, work: Path,
              image_size: int = 256, coreset_ratio: float = 0.01) -> list[dict]:
    """One row per peer: anomalib's detector on every class of `data`, re-scored by us.

    Args:
        data: dataset root or "embedded".  encoder: a key of OFFLINE_WEIGHTS.
        peers: names from PEERS.  venv: the peers' environment.  work: scratch folder.
        image_size: square input side.  coreset_ratio: PatchCore's memory-bank fraction.
    """
    root = dataset_root(data)
    work.mkdir(parents=True, exist_ok=True)
    weights = work / f"{encoder}.pth"
    export_weights(encoder, weights)
    per_peer = {p: {"classes": {}, "info": [], "t0": 0.0} for p in peers}
    for cls in list_classes(root):
        inputs = work / f"{cls}_{image_size}.npz"
        test_set = export_inputs(root, cls, image_size, inputs)
        for peer in peers:
            t0 = time.perf_counter()
            out = work / f"{peer}_{encoder}_{cls}.npz"
            info = run_worker(venv, peer, encoder, inputs, weights, out, coreset_ratio)
            info["wall_seconds"] = time.perf_counter() - t0
            per_peer[peer]["info"].append({"class": cls, **info})
            per_peer[peer]["classes"][cls] = {k: float(v) for k, v in
                                              rescore(out, test_set, cls).items()
                                              if k in METRIC_KEYS}
    rows = []
    for peer, res in per_peer.items():
        mean = aggregate(res["classes"])
        rows.append({"peer": f"anomalib {peer}", "dataset": "embedded" if data == "embedded"
                     else Path(data).name, "encoder": encoder, "image_size": image_size,
                     "metrics": {k: 100 * float(mean[k]) for k in METRIC_KEYS},
                     "classes": {c: {k: 100 * v for k, v in m.items()}
                                 for c, m in res["classes"].items()},
                     "seconds": sum(i["wall_seconds"] for i in res["info"]),
                     "runs": res["info"]})
    return rows


def markdown(rows: list[dict]) -> str:
    """The peers table as markdown (metrics in percent)."""
    head = ["peer", "dataset", "encoder", *METRIC_KEYS, "seconds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["peer"], r["dataset"], r["encoder"],
                 *(f"{r['metrics'][k]:.1f}" for k in METRIC_KEYS), f"{r['seconds']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", action="append", required=True,
                        help="MVTec-layout root or 'embedded' (repeatable)")
    parser.add_argument("--encoders", default="efficientnet_lite0")
    parser.add_argument("--peers", default=",".join(PEERS))
    parser.add_argument("--json", required=True, help="result file (updated after every row)")
    parser.add_argument("--venv", default=str(DEFAULT_VENV))
    parser.add_argument("--work", default="runs/peers", help="scratch folder (inputs, maps)")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--coreset-ratio", type=float, default=0.01)
    args = parser.parse_args(argv)
    encoders, peers = args.encoders.split(","), args.peers.split(",")
    bad = sorted(set(encoders) - OFFLINE_WEIGHTS) + sorted(set(peers) - set(PEERS))
    if bad:
        parser.error(f"unknown {bad}: encoders from {sorted(OFFLINE_WEIGHTS)}, peers from "
                     f"{PEERS}")
    venv = Path(args.venv)
    anomalib_version = ensure_venv(venv)
    path = Path(args.json)
    result = json.loads(path.read_text()) if path.exists() else {"rows": []}
    done = {(r["dataset"], r["encoder"]) for r in result["rows"]}
    for data in args.data:
        name = "embedded" if data == "embedded" else Path(data).name
        for encoder in encoders:
            if (name, encoder) in done:
                print(f"{name} / {encoder}: already in {path}, skipped")
                continue
            result["rows"] += run_peers(data, encoder, peers, venv,
                                        Path(args.work) / name, args.image_size,
                                        args.coreset_ratio)
            result.update(environment=environment(torch.device("cpu")),
                          anomalib=anomalib_version, venv=str(venv))
            write_json(path, result)
    print(markdown(result["rows"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
