"""Peer side of the peers study: run anomalib's PatchCore or PaDiM on given tensors.

Runs inside the study's own virtual environment (anomalib installed, NOT this package), so it
imports nothing from mambaadv2_ref. It reads

    --inputs NPZ    train (N, 3, S, S) and test (M, 3, S, S) ImageNet-normalised images
    --weights PTH   the full timm classifier state dict of the encoder (our offline weights)

builds the anomalib torch model with `pre_trained=False`, copies the encoder weights into its
timm feature extractor (every tensor it has must be in PTH: no download, no silent random
weights), fits on the train images, and writes --out NPZ with the raw image scores (M,) and
anomaly maps (M, S, S) of the test images, plus the fit and test seconds. Layers are timm
feature indices: PatchCore 2, 3 (strides 8, 16; anomalib's layer2/layer3 for a ResNet), PaDiM
1, 2, 3 (strides 4, 8, 16; its layer1-3).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def build(peer: str, encoder: str, coreset_ratio: float):
    """The anomalib torch model of `peer` on `encoder` (random weights), and its fit step."""
    if peer == "patchcore":
        from anomalib.models.image.patchcore.torch_model import PatchcoreModel

        model = PatchcoreModel(layers=[2, 3], backbone=encoder, pre_trained=False,
                               num_neighbors=9)
        return model, lambda: model.subsample_embedding(coreset_ratio)
    if peer == "padim":
        from anomalib.models.image.padim.torch_model import PadimModel

        probe = PadimModel(backbone=encoder, layers=[1, 2, 3], pre_trained=False, n_features=1)
        model = PadimModel(backbone=encoder, layers=[1, 2, 3], pre_trained=False,
                           n_features=probe.n_features_original)  # all channels kept
        return model, model.fit
    raise ValueError(f"peer must be 'patchcore' or 'padim', got {peer!r}")


def inject_weights(model: torch.nn.Module, state: dict) -> int:
    """Copy the encoder tensors of `state` into the model's timm feature extractor.

    Returns:
        the number of tensors copied. Raises KeyError naming tensors that `state` lacks.
    """
    extractor = model.feature_extractor.feature_extractor
    target = extractor.state_dict()
    missing = [k for k in target if k not in state]
    if missing:
        raise KeyError(f"the weights file lacks {len(missing)} encoder tensors, e.g. {missing[:3]}")
    extractor.load_state_dict({k: state[k] for k in target}, strict=True)
    return len(target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peer", required=True, choices=("patchcore", "padim"))
    parser.add_argument("--encoder", required=True)
    parser.add_argument("--inputs", required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--coreset-ratio", type=float, default=0.01)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    data = np.load(args.inputs)
    model, fit = build(args.peer, args.encoder, args.coreset_ratio)
    copied = inject_weights(model, torch.load(args.weights, map_location="cpu",
                                              weights_only=True))
    t0 = time.perf_counter()
    model.train()
    with torch.no_grad():
        for batch in torch.from_numpy(data["train"]).float().split(args.batch_size):
            model(batch)
        fit()
    fit_seconds = time.perf_counter() - t0
    model.eval()
    scores, maps = [], []
    t0 = time.perf_counter()
    with torch.no_grad():
        for batch in torch.from_numpy(data["test"]).float().split(args.batch_size):
            out = model(batch)
            scores.append(out.pred_score.reshape(-1).numpy())
            maps.append(out.anomaly_map.reshape(len(batch), *batch.shape[-2:]).numpy())
    test_seconds = time.perf_counter() - t0
    from importlib.metadata import version

    info = {"peer": args.peer, "encoder": args.encoder, "anomalib": version("anomalib"),
            "torch": torch.__version__, "encoder_tensors_injected": copied,
            "fit_seconds": fit_seconds, "test_seconds": test_seconds,
            "coreset_ratio": args.coreset_ratio if args.peer == "patchcore" else None,
            "bank_size": int(model.memory_bank.shape[0]) if args.peer == "patchcore" else None,
            "padim_features": int(model.n_features) if args.peer == "padim" else None}
    np.savez(args.out, scores=np.concatenate(scores).astype(np.float32),
             maps=np.concatenate(maps).astype(np.float32), info=json.dumps(info))
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
