"""PatchCore-style baseline on the same frozen encoder as MambaADv2 (Roth et al., CVPR 2022).

No training by gradient: the normal patches of the training images are stored in a memory bank,
thinned by greedy coreset subsampling, and a test patch's anomaly score is its distance to the
nearest patch in the bank.

    phi_k(x)            encoder features at the two mid scales k (the 2nd and 3rd of 3)
    f = concat_k up(avgpool3x3(phi_k(x)))        locally aware patch feature, eq. (PC-1)
    M = coreset(F, ratio)                       k-center greedy on random projections, eq. (PC-2)
    s(p) = min_{m in M} ||f(p) - m||_2          patch score, eq. (PC-3)
    map = G_sigma * upsample(s),  score = max(map)   anomaly map and image score, eq. (PC-4)

Glossary (code name -> symbol): `patches` f (num_patches, C); `memory_bank` M (M, C);
`num_projections` d' of the random projection; `coreset_ratio` |M| / |F|.

It exposes the same `anomaly_map(images) -> (maps, scores)` as `ADModel`, so evaluation and
prediction serve both.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from mambaadv2_ref.model.anomaly_map import gaussian_blur
from mambaadv2_ref.model.encoder import FrozenEncoder


@dataclass
class PatchCoreConfig:
    """Settings of the PatchCore baseline.

    Args:
        encoder: timm name of the frozen encoder (same registry as ADModel's).
        image_size: side of the square input.
        levels: indices of the encoder scales used (PatchCore: the two mid scales).
        coreset_ratio: fraction of training patches kept in the memory bank, in (0, 1].
        num_projections: dimension d' of the random projection used by the coreset search.
        sigma: Gaussian smoothing of the anomaly map (MambaAD: 4).
        chunk_size: number of query patches per distance chunk.
        seed: seed of the coreset's random projection and start point.
    """

    encoder: str = "efficientnet_lite0"
    image_size: int = 128
    levels: tuple[int, int] = (1, 2)
    coreset_ratio: float = 0.1
    num_projections: int = 128
    sigma: float = 4.0
    chunk_size: int = 4096
    seed: int = 0

    def __post_init__(self):
        self.levels = tuple(self.levels)
        if not 0.0 < self.coreset_ratio <= 1.0:
            raise ValueError(f"coreset_ratio must be in (0, 1], got {self.coreset_ratio}")
        if len(self.levels) < 1:
            raise ValueError(f"levels must name at least one encoder scale, got {self.levels}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PatchCoreConfig:
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown PatchCoreConfig keys {sorted(unknown)}; "
                             f"valid: {sorted(names)}")
        return cls(**d)


def local_patch_features(feats: list[torch.Tensor]) -> torch.Tensor:
    """Locally aware patch features: 3x3 average pooling, upsample to the finest grid, concat.

    Args:
        feats: feature maps [(B, C_k, H_k, W_k)], finest first.

    Returns:
        (B, sum_k C_k, H_0, W_0).

    Implements: eq. (PC-1) (PatchCore §3.1, patch size 3).
    """
    size = feats[0].shape[-2:]
    pooled = [F.avg_pool2d(f, 3, stride=1, padding=1, count_include_pad=False) for f in feats]
    ups = [p if p.shape[-2:] == size else
           F.interpolate(p, size=size, mode="bilinear", align_corners=False) for p in pooled]
    return torch.cat(ups, dim=1)


def nearest_distance(queries: torch.Tensor, bank: torch.Tensor,
                     chunk_size: int = 4096) -> torch.Tensor:
    """Euclidean distance of each query to its nearest bank row, in chunks of queries.

    Args:
        queries: (Q, C).
        bank: (M, C), M >= 1.
        chunk_size: queries per `torch.cdist` call (bounds memory at chunk_size x M).

    Returns:
        (Q,) min_m ||q - m||_2.

    Implements: eq. (PC-3).
    """
    if queries.dim() != 2 or bank.dim() != 2 or queries.shape[1] != bank.shape[1]:
        raise ValueError(f"queries (Q, C) and bank (M, C) must share C, got "
                         f"{tuple(queries.shape)} and {tuple(bank.shape)}")
    if bank.shape[0] == 0:
        raise ValueError("bank is empty: fit the memory bank before scoring")
    out = [torch.cdist(q, bank, compute_mode="donot_use_mm_for_euclid_dist").amin(dim=1)
           for q in queries.split(chunk_size)]
    return torch.cat(out)


def nearest_distance_brute(queries: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """Slow twin of `nearest_distance`: all pairwise differences at once."""
    return (queries[:, None, :] - bank[None, :, :]).pow(2).sum(-1).sqrt().amin(dim=1)


def kcenter_greedy(x: torch.Tensor, k: int, start: int = 0) -> torch.Tensor:
    """Greedy k-center selection: repeatedly add the point farthest from the chosen set.

    Keeps, for every point, its squared distance to the nearest chosen centre and updates it with
    one new centre per iteration (O(k M D)); runs on the device of `x`.

    Args:
        x: (M, D) points.
        k: number of centres, 1 <= k <= M.
        start: index of the first centre.

    Returns:
        LongTensor (k,) of selected indices, in selection order.

    Implements: eq. (PC-2), the minimax facility location of PatchCore §3.2 (Sener & Savarese).
    """
    if not 1 <= k <= x.shape[0]:
        raise ValueError(f"k must be in [1, {x.shape[0]}], got {k}")
    selected = torch.empty(k, dtype=torch.long)
    selected[0] = start
    min_d2 = (x - x[start]).pow(2).sum(-1)
    for i in range(1, k):
        j = int(torch.argmax(min_d2))
        selected[i] = j
        min_d2 = torch.minimum(min_d2, (x - x[j]).pow(2).sum(-1))
    return selected


def kcenter_greedy_brute(x: torch.Tensor, k: int, start: int = 0) -> torch.Tensor:
    """Slow twin of `kcenter_greedy`: recompute distances to all chosen centres every time."""
    selected = [start]
    for _ in range(1, k):
        d2 = (x[:, None, :] - x[selected][None, :, :]).pow(2).sum(-1)   # (M, |S|)
        selected.append(int(torch.argmax(d2.amin(dim=1))))
    return torch.tensor(selected, dtype=torch.long)


def coreset_indices(patches: torch.Tensor, ratio: float, num_projections: int = 128,
                    seed: int = 0) -> torch.Tensor:
    """Indices of a greedy coreset of `patches` keeping a fraction `ratio` of them.

    The search runs on a Gaussian random projection to `num_projections` dimensions
    (Johnson-Lindenstrauss), as PatchCore does, when that is smaller than the feature size.

    Args:
        patches: (M, C) patch features.
        ratio: kept fraction in (0, 1].
        num_projections: d' of the projection.
        seed: seeds the projection and the start point.

    Returns:
        LongTensor (max(1, round(ratio M)),).

    Implements: eq. (PC-2).
    """
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    m, c = patches.shape
    k = max(1, round(ratio * m))
    if k == m:
        return torch.arange(m)
    gen = torch.Generator().manual_seed(seed)  # on the CPU: the same draws on every device
    x = patches.float()
    if num_projections < c:
        proj = torch.randn(c, num_projections, generator=gen) / num_projections ** 0.5
        x = x @ proj.to(x.device)
    start = int(torch.randint(m, (1,), generator=gen))
    return kcenter_greedy(x, k, start)


class PatchCore(nn.Module):
    """PatchCore-style detector: frozen encoder + coreset memory bank + nearest-neighbour score.

    Args:
        config: a `PatchCoreConfig`.
        pretrained: load the encoder's pretrained weights (see `model.encoder.create_backbone`).
    """

    def __init__(self, config: PatchCoreConfig, pretrained: bool = True):
        super().__init__()
        self.config = config
        self.encoder = FrozenEncoder(config.encoder, pretrained=pretrained)
        self.register_buffer("memory_bank", torch.empty(0, 0))

    def patch_features(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, S, S), normalised -> locally aware patch features (B, C, h, w)."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must have shape (B, 3, H, W), got {tuple(images.shape)}")
        with torch.no_grad():
            feats = self.encoder(images)
        return local_patch_features([feats[i].float() for i in self.config.levels])

    @torch.no_grad()
    def fit(self, batches) -> int:
        """Build the memory bank from an iterable of normalised image batches (B, 3, S, S).

        Returns:
            the number of training patches before subsampling.
        """
        self.eval()
        patches = []
        for images in batches:
            f = self.patch_features(images)
            patches.append(f.permute(0, 2, 3, 1).reshape(-1, f.shape[1]))
        if not patches:
            raise ValueError("fit needs at least one batch of training images")
        allp = torch.cat(patches)
        idx = coreset_indices(allp, self.config.coreset_ratio, self.config.num_projections,
                              self.config.seed)
        self.memory_bank = allp[idx.to(allp.device)]
        return allp.shape[0]

    @torch.no_grad()
    def anomaly_map(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Anomaly maps and image scores of normalised images.

        Args:
            images: (B, 3, H, W), ImageNet-normalised.

        Returns:
            maps (B, H, W) smoothed nearest-neighbour distances, scores (B,) = max of each map.

        Implements: eqs. (PC-3) and (PC-4).
        """
        self.eval()
        f = self.patch_features(images)
        b, c, h, w = f.shape
        d = nearest_distance(f.permute(0, 2, 3, 1).reshape(-1, c), self.memory_bank,
                             self.config.chunk_size).view(b, 1, h, w)
        up = F.interpolate(d, size=images.shape[-2:], mode="bilinear", align_corners=True)
        maps = gaussian_blur(up[:, 0], self.config.sigma) if self.config.sigma > 0 else up[:, 0]
        return maps, maps.flatten(1).amax(dim=1)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "memory_bank"
        if key in state_dict:  # the bank's size is only known from the checkpoint
            self.memory_bank = torch.empty_like(state_dict[key], device=self.memory_bank.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
