"""PatchCore-style baseline on the same frozen encoder as MambaADv2 (Roth et al., CVPR 2022).

No training by gradient: the normal patches of the training images are stored in a memory bank,
thinned by greedy coreset subsampling, and a test patch's anomaly score is its distance to the
nearest patch in the bank.

    phi_k(x)            encoder features at the two mid scales k (the 2nd and 3rd of 3)
    f = concat_k up(avgpool3x3(phi_k(x)))        locally aware patch feature, eq. (PC-1)
    M = coreset(F, ratio)                       k-center greedy on random projections, eq. (PC-2)
    s(p) = min_{m in M} ||f(p) - m||_2          patch score, eq. (PC-3)
    map = G_sigma * upsample(s),  score = max(map)   anomaly map and image score, eq. (PC-4)

Options that follow the PatchCore paper / anomalib instead (all off by default, so runs made
before they existed mean what they meant):

    image_score="reweighted"    the paper's image score, eq. (PC-5) below (anomalib's default)
    image_score="patch_max"     s* = max_p s(p), the unsmoothed patch-grid maximum
    map_upsample="nearest"      each patch score fills its stride x stride cell (anomalib)
    blur_mode="mirror"          torch/kornia's 'reflect' border of the blur (anomalib)
    pool_include_pad=True       the 3x3 average counts the zero padding (torch's AvgPool2d default)
    projection="sparse_jl"      very sparse random projection to the Johnson-Lindenstrauss
                                dimension, eq. (PC-6) (anomalib's SparseRandomProjection(eps=0.9))

The re-weighted image score (PatchCore §3.3, eq. 7): with m_test* = argmax_p s(p) the most
anomalous test patch, m* = argmin_{m in M} ||m_test* - m|| its nearest memory patch,
s* = ||m_test* - m*|| and N_b(m*) the b = num_neighbors nearest memory patches of m* (m* itself
included),

    score = (1 - exp(s*) / sum_{m in N_b(m*)} exp(||m_test* - m||)) * s*          eq. (PC-5)

so a test patch whose nearest memory patch lies in a dense, well supported part of the bank gets
a higher weight than one whose nearest memory patch is an isolated, rare one.

Glossary (code name -> symbol): `patches` f (num_patches, C); `memory_bank` M (M, C);
`num_projections` d' of the random projection; `coreset_ratio` |M| / |F|; `num_neighbors` b.

It exposes the same `anomaly_map(images) -> (maps, scores)` as `ADModel`, so evaluation and
prediction serve both.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from mambaadv2_ref.model.anomaly_map import BLUR_MODES, gaussian_blur
from mambaadv2_ref.model.encoder import FrozenEncoder

IMAGE_SCORES = ("map_max", "patch_max", "reweighted")
MAP_UPSAMPLES = ("bilinear", "nearest")
PROJECTIONS = ("gaussian", "sparse_jl")
# fields added after checkpoints were first written: a stored config without them was made with
# their defaults (the behaviour before they existed), see `PatchCoreConfig.complete`
ADDED_FIELDS = ("image_score", "num_neighbors", "map_upsample", "blur_mode", "pool_include_pad",
                "projection", "jl_eps")


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
        image_score: "map_max" (max of the smoothed map, eq. PC-4), "patch_max" (max of the
            unsmoothed patch scores, s*) or "reweighted" (the paper's eq. PC-5).
        num_neighbors: b of eq. (PC-5), the neighbourhood N_b(m*) of the nearest memory patch
            (anomalib: 9); used by image_score="reweighted" only.
        map_upsample: patch grid -> image size: "bilinear" (align_corners=True) or "nearest".
        blur_mode: border of the Gaussian smoothing, "reflect" or "mirror" (scipy's names, see
            `anomaly_map.gaussian_blur`).
        pool_include_pad: the 3x3 average pooling of eq. (PC-1) divides by 9 at the border too
            (zero padding counted) instead of by the number of pixels inside.
        projection: random projection of the coreset search: "gaussian" (dense, to
            num_projections dims when that is below C) or "sparse_jl" (very sparse, to the
            Johnson-Lindenstrauss dimension of eq. PC-6 with distortion jl_eps).
        jl_eps: distortion eps of projection="sparse_jl" (anomalib: 0.9).
    """

    encoder: str = "efficientnet_lite0"
    image_size: int = 128
    levels: tuple[int, int] = (1, 2)
    coreset_ratio: float = 0.1
    num_projections: int = 128
    sigma: float = 4.0
    chunk_size: int = 4096
    seed: int = 0
    image_score: str = "map_max"
    num_neighbors: int = 9
    map_upsample: str = "bilinear"
    blur_mode: str = "reflect"
    pool_include_pad: bool = False
    projection: str = "gaussian"
    jl_eps: float = 0.9

    def __post_init__(self):
        self.levels = tuple(self.levels)
        if not 0.0 < self.coreset_ratio <= 1.0:
            raise ValueError(f"coreset_ratio must be in (0, 1], got {self.coreset_ratio}")
        if len(self.levels) < 1:
            raise ValueError(f"levels must name at least one encoder scale, got {self.levels}")
        for name, allowed in (("image_score", IMAGE_SCORES), ("map_upsample", MAP_UPSAMPLES),
                              ("blur_mode", BLUR_MODES), ("projection", PROJECTIONS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.num_neighbors < 2:
            raise ValueError(f"num_neighbors must be >= 2 (b = 1 makes the weight of eq. PC-5 "
                             f"zero), got {self.num_neighbors}")
        if not 0.0 < self.jl_eps < 1.0:
            raise ValueError(f"jl_eps must be in (0, 1), got {self.jl_eps}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def complete(cls, d: dict) -> dict:
        """`d` with the `ADDED_FIELDS` it lacks set to their defaults: a config stored before a
        field existed was computed the way that field's default computes."""
        defaults = {f.name: f.default for f in fields(cls) if f.name in ADDED_FIELDS}
        return {**defaults, **d}

    @classmethod
    def from_dict(cls, d: dict) -> PatchCoreConfig:
        """Config from a dict; missing keys take their defaults, unknown keys are refused."""
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown PatchCoreConfig keys {sorted(unknown)}; "
                             f"valid: {sorted(names)}")
        return cls(**d)


def local_patch_features(feats: list[torch.Tensor], include_pad: bool = False) -> torch.Tensor:
    """Locally aware patch features: 3x3 average pooling, upsample to the finest grid, concat.

    Args:
        feats: feature maps [(B, C_k, H_k, W_k)], finest first.
        include_pad: the average at the border divides by 9, counting the zero padding (torch's
            `AvgPool2d(3, 1, 1)` default, anomalib), instead of by the pixels inside (4 at a
            corner, 6 along an edge).

    Returns:
        (B, sum_k C_k, H_0, W_0).

    Implements: eq. (PC-1) (PatchCore §3.1, patch size 3).
    """
    size = feats[0].shape[-2:]
    pooled = [F.avg_pool2d(f, 3, stride=1, padding=1, count_include_pad=include_pad)
              for f in feats]
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


def reweighted_score(query: torch.Tensor, bank: torch.Tensor, num_neighbors: int) -> torch.Tensor:
    """The PatchCore paper's re-weighted image score of one image's most anomalous patch.

    With m_test* = `query`, m* = argmin_{m in M} ||m_test* - m|| its nearest memory patch,
    s* = ||m_test* - m*|| and N_b(m*) the b = min(num_neighbors, |M|) memory patches nearest to
    m* (m* itself first),

        score = (1 - exp(s*) / sum_{m in N_b(m*)} exp(||m_test* - m||)) * s*

    computed as (1 - exp(s* - logsumexp_{m in N_b} ||m_test* - m||)) * s* (no overflow).

    Args:
        query: (C,) the test patch feature of largest nearest-neighbour distance.
        bank: (M, C) memory bank, M >= 2.
        num_neighbors: b >= 2.

    Returns:
        0-d tensor, the image score.

    Implements: eq. (PC-5) (PatchCore §3.3, eq. 7).
    """
    if bank.dim() != 2 or bank.shape[0] < 2:
        raise ValueError(f"the re-weighted score needs a bank (M, C) with M >= 2, got "
                         f"{tuple(bank.shape)}")
    if num_neighbors < 2:
        raise ValueError(f"num_neighbors must be >= 2, got {num_neighbors}")
    exact = "donot_use_mm_for_euclid_dist"
    to_query = torch.cdist(query[None], bank, compute_mode=exact)[0]          # (M,)
    nearest = int(torch.argmin(to_query))                                     # m*
    b = min(num_neighbors, bank.shape[0])
    to_nearest = torch.cdist(bank[nearest][None], bank, compute_mode=exact)[0]
    support = torch.topk(to_nearest, b, largest=False).indices                # N_b(m*)
    s_star = to_query[nearest]
    weight = 1.0 - torch.exp(s_star - torch.logsumexp(to_query[support], dim=0))
    return weight * s_star


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


def jl_dimension(num_points: int, eps: float) -> int:
    """The Johnson-Lindenstrauss dimension that keeps the pairwise distances of `num_points`
    points within a factor 1 +- eps (Dasgupta & Gupta; scikit-learn's
    `johnson_lindenstrauss_min_dim`):

        d' = floor(4 ln(n) / (eps^2 / 2 - eps^3 / 3))                              eq. (PC-6)

    (n = 124 928 BSData patches at 256 px and eps = 0.9: d' = 289.)
    """
    if num_points < 1 or not 0.0 < eps < 1.0:
        raise ValueError(f"need num_points >= 1 and eps in (0, 1), got {num_points}, {eps}")
    return int(4 * math.log(num_points) / (eps ** 2 / 2 - eps ** 3 / 3))


def sparse_projection(c: int, d: int, generator: torch.Generator) -> torch.Tensor:
    """A very sparse random projection matrix (C, d') (Li, Hastie & Church, KDD 2006).

    Every entry is independently +-sqrt(1 / rho) / sqrt(d') with probability rho / 2 each and 0
    otherwise, rho = 1 / sqrt(C), so E[||x P||^2] = ||x||^2 (scikit-learn's and anomalib's
    `SparseRandomProjection` with the default density).
    """
    density = 1.0 / math.sqrt(c)
    keep = torch.rand(c, d, generator=generator) < density
    sign = torch.randint(0, 2, (c, d), generator=generator).float() * 2 - 1
    return keep * sign * (math.sqrt(1.0 / density) / math.sqrt(d))


def coreset_indices(patches: torch.Tensor, ratio: float, num_projections: int = 128,
                    seed: int = 0, projection: str = "gaussian",
                    jl_eps: float = 0.9) -> torch.Tensor:
    """Indices of a greedy coreset of `patches` keeping a fraction `ratio` of them.

    The search runs on a random projection (Johnson-Lindenstrauss), as PatchCore does:
    "gaussian" projects to `num_projections` dimensions with a dense Gaussian matrix when that
    is smaller than the feature size C (else the features are used as they are); "sparse_jl"
    projects with `sparse_projection` to d' = `jl_dimension(M, jl_eps)` dimensions, whatever C
    is (anomalib: 289 > C = 152 on BSData, so it does not reduce anything there).

    Args:
        patches: (M, C) patch features.
        ratio: kept fraction in (0, 1].
        num_projections: d' of the "gaussian" projection.
        seed: seeds the projection and the start point.
        projection: "gaussian" or "sparse_jl".
        jl_eps: distortion eps of "sparse_jl".

    Returns:
        LongTensor (max(1, round(ratio M)),).

    Implements: eq. (PC-2), with eq. (PC-6) for "sparse_jl".
    """
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    if projection not in PROJECTIONS:
        raise ValueError(f"projection must be one of {PROJECTIONS}, got {projection!r}")
    m, c = patches.shape
    k = max(1, round(ratio * m))
    if k == m:
        return torch.arange(m)
    gen = torch.Generator().manual_seed(seed)  # on the CPU: the same draws on every device
    x = patches.float()
    if projection == "sparse_jl":
        x = x @ sparse_projection(c, jl_dimension(m, jl_eps), gen).to(x.device)
    elif num_projections < c:
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
        return local_patch_features([feats[i].float() for i in self.config.levels],
                                    include_pad=self.config.pool_include_pad)

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
                              self.config.seed, self.config.projection, self.config.jl_eps)
        self.memory_bank = allp[idx.to(allp.device)]
        return allp.shape[0]

    @torch.no_grad()
    def anomaly_map(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Anomaly maps and image scores of normalised images.

        Args:
            images: (B, 3, H, W), ImageNet-normalised.

        Returns:
            maps (B, H, W) smoothed nearest-neighbour distances; scores (B,): by
            `config.image_score` the max of each map ("map_max"), the max of the unsmoothed
            patch scores ("patch_max") or the re-weighted max of eq. (PC-5) ("reweighted").

        Implements: eqs. (PC-3), (PC-4) and (PC-5).
        """
        patches, d = self.patch_scores(images)
        return self.maps_and_scores(patches, d, images.shape[-2:])

    @torch.no_grad()
    def patch_scores(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Patch features and their nearest-neighbour distances s(p), eq. (PC-3).

        Returns:
            patches (B, h w, C) and d (B, 1, h, w) on the patch grid.
        """
        self.eval()
        f = self.patch_features(images)
        b, c, h, w = f.shape
        patches = f.permute(0, 2, 3, 1).reshape(b, h * w, c)
        d = nearest_distance(patches.reshape(-1, c), self.memory_bank,
                             self.config.chunk_size).view(b, 1, h, w)
        return patches, d

    @torch.no_grad()
    def maps_and_scores(self, patches: torch.Tensor, d: torch.Tensor, size,
                        config: PatchCoreConfig | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """Anomaly maps (eq. PC-4) and image scores of `patch_scores`' output.

        Args:
            patches: (B, h w, C) patch features.  d: (B, 1, h, w) their distances.
            size: (H, W) of the images.
            config: the scoring settings (map_upsample, sigma, blur_mode, image_score,
                num_neighbors) to use; None = `self.config`. The memory bank is this model's.

        Returns:
            maps (B, H, W), scores (B,), as `anomaly_map`.
        """
        cfg = config or self.config
        if cfg.map_upsample == "bilinear":
            up = F.interpolate(d, size=tuple(size), mode="bilinear", align_corners=True)
        else:
            up = F.interpolate(d, size=tuple(size), mode="nearest")
        maps = gaussian_blur(up[:, 0], cfg.sigma, mode=cfg.blur_mode) if cfg.sigma > 0 \
            else up[:, 0]
        if cfg.image_score == "map_max":
            return maps, maps.flatten(1).amax(dim=1)
        flat = d.flatten(1)                                               # (B, h w)
        if cfg.image_score == "patch_max":
            return maps, flat.amax(dim=1)
        worst = flat.argmax(dim=1)                                        # m_test* per image
        scores = torch.stack([reweighted_score(patches[i, worst[i]], self.memory_bank,
                                               cfg.num_neighbors)
                              for i in range(len(worst))])
        return maps, scores

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "memory_bank"
        if key in state_dict:  # the bank's size is only known from the checkpoint
            self.memory_bank = torch.empty_like(state_dict[key], device=self.memory_bank.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
