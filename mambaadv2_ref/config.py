"""Every setting in one place: model names, the model config, the tiny/small/paper table.

`PROFILES` is the one table of named sizes: run settings (image size, batch, default steps; the
lr follows the batch by `scaled_lr`) and model sizes. `tiny` runs the book on a laptop CPU in
minutes, `small` trains on a CPU in tens of minutes, `paper` is the paper's setting for a GPU.

`ModelConfig` fixes everything that shapes the network. Every ablation of the book is one field:

    model            "mambaadv2" (DSS modules of HSS-v2 blocks) or "mambaad" (v1: LSS of SS2D)
    position_aware   Mamba-3 rotary angles + exponential-trapezoidal step (off: Mamba-2 SSD)
    path_mode        "sum" | "gate" | "recurrence" | "matrix": the HSS dual paths
    matrix_causal    causal or two-sided decay mask in the matrix path
    matrix_max_tokens  above this sequence length the matrix path runs in windows of that length
    scan_plan        progressive scanning plan (preset name or ScanPlan dict), `curve` /
                     `num_directions` override every stage when set
    matrix_impl, stack_scans, checkpoint_matrix, checkpoint_block, checkpoint_stages, backend,
    compile_mixer, compile_memory_budget, chunk_size, scan_float32
                     how it is computed (same function; COMPUTE_SETTINGS)
    dwconv, bc_norm, use_fft, local_kernels   the remaining switches

Decoder stages follow MambaAD (book appendix A.1.1): `modules_per_stage` splits a depth into
modules, stage s works on a grid of (H / 32) 2^s x (W / 32) 2^s (`stage_sizes`).
"""

from __future__ import annotations

import numbers
import os
from dataclasses import asdict, dataclass, field, fields, replace

from mambaadv2_ref.scanning import ScanPlan, resolve_plan
from mambaadv2_ref.scans.backends import BACKENDS
from mambaadv2_ref.scans.common import check_positive_int

MODELS = ("mambaadv2", "mambaad")  # the state space detectors (ModelConfig.model)
DETECTORS = (*MODELS, "patchcore")  # everything train / evaluate / predict accept
PATH_MODES = ("sum", "gate", "recurrence", "matrix")  # the HSS block's dual paths
MATRIX_IMPLS = ("scan", "materialised")  # how the HSS matrix path is computed (same function)
# torch.compile of each HSS mixer (same function): off, or a torch.compile mode
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune-no-cudagraphs")
# how a step computes: bf16 autocast, float32 with TF32 matrix products (CUDA), or float32
PRECISIONS = ("auto", "bf16", "tf32", "fp32")
# settings that change how the model is computed, not what it computes: a checkpoint written with
# other values (or before a setting existed) loads and resumes under the current ones
COMPUTE_SETTINGS = ("backend", "checkpoint_matrix", "checkpoint_block", "checkpoint_stages",
                    "matrix_impl", "stack_scans", "compile_mixer", "compile_memory_budget",
                    "chunk_size", "scan_float32")
PROFILE_ENV = "MAMBAADV2_PROFILE"


def scaled_lr(global_batch: int) -> float:
    """MambaAD's learning rate rule: 0.005 x global batch / 16 (book appendix A.1)."""
    return 0.005 * check_positive_int("global_batch", global_batch) / 16


@dataclass(frozen=True)
class Profile:
    """One row of the profile table: run settings and the model sizes that go with them.

    Args:
        name: profile name.
        image_size: side of the square network input, in pixels (a multiple of 32).
        batch_size: training batch size (per process).
        num_steps: default number of optimisation steps.
        model: ModelConfig fields of this profile's MambaADv2 (sizes, plan, windows).
    """

    name: str
    image_size: int
    batch_size: int
    num_steps: int
    model: dict = field(default_factory=dict, hash=False, compare=False, repr=False)

    @property
    def lr(self) -> float:
        """`scaled_lr` of one process's batch."""
        return scaled_lr(self.batch_size)

    def to_dict(self) -> dict:
        """The run settings as JSON (what a checkpoint records; model sizes are in its config)."""
        d = asdict(self)
        d.pop("model")
        return {**d, "lr": self.lr}


PROFILES: dict[str, Profile] = {
    # CPU: a training step on batch 8 at 128 px in well under a second on 2 cores
    # (fewer directions where tokens are many, matrix path in windows of 64 tokens)
    "tiny": Profile("tiny", image_size=128, batch_size=8, num_steps=150, model=dict(
        encoder="efficientnet_lite0", dims=(128, 64, 32, 16), depths=(1, 1, 1, 1), d_state=16,
        headdim=16, chunk_size=64, scan_plan="decay_deep", matrix_max_tokens=64)),
    # CPU, tens of minutes of training: tiny's plan and windows, wider, at 192 px
    "small": Profile("small", image_size=192, batch_size=8, num_steps=1500, model=dict(
        encoder="efficientnet_lite0", dims=(256, 128, 64, 32), depths=(1, 1, 1, 1), d_state=16,
        headdim=32, chunk_size=64, scan_plan="decay_deep", matrix_max_tokens=64)),
    # GPU: the paper's sizes (book appendix A.1), MambaADv2's progressive plan (8, 8, 4, 2
    # directions, as tiny and small; until 2026-12-01 hilbert x 8 everywhere, v1's `uniform`),
    # the matrix path on 256-token windows (16 x 16 Hilbert patches at 32 x 32 and 64 x 64)
    "paper": Profile("paper", image_size=256, batch_size=16, num_steps=20000, model=dict(
        encoder="resnet34", dims=(512, 256, 128, 64), depths=(3, 4, 6, 3), d_state=16,
        headdim=32, chunk_size=64, scan_plan="decay_deep", matrix_max_tokens=256)),
}
V1_DEFAULTS = dict(scan_plan="uniform", use_fft=False, dwconv=True)


def default_profile_name() -> str:
    """`$MAMBAADV2_PROFILE` if set, else `paper` when a CUDA GPU is present, else `tiny`."""
    name = os.environ.get(PROFILE_ENV)
    if name:
        _one_of(PROFILE_ENV, name, tuple(PROFILES))
        return name
    import torch

    return "paper" if torch.cuda.is_available() else "tiny"


def get_profile(name: str | None = None) -> Profile:
    """The profile called `name`, or the default one (`default_profile_name`)."""
    name = default_profile_name() if name is None else name
    _one_of("profile", name, tuple(PROFILES))
    return PROFILES[name]


@dataclass
class ModelConfig:
    """Everything that shapes an anomaly detection model (see the module docstring).

    Args:
        model: "mambaadv2" or "mambaad".
        profile: name of the preset it came from (informative).
        encoder: timm backbone name (model.encoder.ENCODERS).
        pretrained: ImageNet weights for the encoder.
        image_size: side of the (square) training image; any multiple of 32 works at inference.
        dims: decoder widths per stage, deepest first (MambaAD: 512, 256, 128, 64).
        depths: HSS blocks per stage (MambaAD: 3, 4, 6, 3).
        d_state: N, state size per head (v2) or per channel (v1).
        headdim: p, channels per head (v2).
        expand: d_inner = expand * dim.
        ngroups: g, B/C groups shared by the heads (v2).
        chunk_size: Q of the chunked recurrence.
        scan_plan, curve, num_directions: the scanning plan and its overrides.
        path_mode, matrix_causal, matrix_max_tokens: the dual paths of the HSS block.
        matrix_impl: "scan" (the matrix path as two linear scans per window, O(L)) or
            "materialised" (its (window x window) matrix, the slow twin: same function).
        stack_scans: the HSS block's causal and anticausal scans of the same inputs in one
            scan call, the sequence and its reversal stacked along the batch (`scans.two_sided`,
            TS.5); False (the default): one call per scan, the obviously-correct twin and,
            measured, faster on CPUs (`book/results/stack_scans_cpu.json`); the stacked
            route is for the launch-bound GPU step, not yet timed there.
        compile_mixer: "off" (eager PyTorch, the obviously-correct twin) or a `torch.compile`
            mode for every HSS mixer (eqs. 1-8 without the residual): "default" fuses the many
            small elementwise kernels of the launch-bound GPU step, "reduce-overhead" also
            replays them as CUDA graphs. The same function (tested forward and backward); the
            first step compiles (minutes at the paper profile, cached on disk).
        compile_memory_budget: None (torch's own choice) or a number in [0, 1]: the activation
            memory budget of the compiled mixers (`torch._functorch.config.
            activation_memory_budget`, `blocks.compiled.memory_budget`). Below 1 the compiled
            forward keeps about that fraction of the activations it would keep by default and
            the compiled backward recomputes the rest (0: keep as little as it can): less memory,
            more backward work, the same function (tested forward and backward). It acts inside
            the compiled graphs, so unlike `checkpoint_block` it combines with
            "reduce-overhead". Needs compile_mixer != "off" (nothing compiled: it would do
            nothing) and torch >= 2.4; one budget per process (`blocks.compiled`).
        checkpoint_matrix: recompute the matrix path in the backward pass (memory).
        checkpoint_block: recompute every HSS block in the backward pass (least memory, slower).
        checkpoint_stages: recompute the HSS blocks of these decoder stages only (0 = the
            deepest, 8 x 8 at 256 px); () = none. The stages hold unequal shares of the
            activations (stages 1-2 about 60 % at the paper profile), so a subset buys most of
            `checkpoint_block`'s memory for part of its extra forward. With `checkpoint_block`
            (every stage) it is redundant and refused; both are refused with
            compile_mixer "reduce-overhead" (the recomputation overwrites CUDA-graph outputs;
            `compile_memory_budget` recomputes inside the compiled graphs instead).
        scan_float32: under bf16 autocast, run the HSS scans with autocast off (float32 inputs
            and matrix products, `blocks.hss.scans_in_float32`); without autocast it changes
            nothing (tested equal), under it the scans come closer to the float32 function
            (tested). False keeps the bf16 route that the committed bf16 runs used.
        position_aware: rotary angles and trapezoid factor (Mamba-3) on/off.
        rope_fraction: fraction of d_state that the rotary angles turn (Mamba-3: 0.5).
        dwconv: depthwise 3x3 conv + SiLU on x before the scan (v2; v1 always has it).
        bc_norm: RMSNorm and bias (init 1) on B and C (v2).
        use_fft: FFT path in the frequency-enhanced conv (v2).
        local_kernels: depthwise kernel sizes of the local paths.
        drop_path: maximum stochastic-depth rate (linspace(0, max) reversed, MambaAD).
        backend: scan backend "auto" | "torch" | "mamba_ssm".
    """

    model: str = "mambaadv2"
    profile: str = "custom"
    encoder: str = "resnet34"
    pretrained: bool = True
    image_size: int = 256
    dims: tuple[int, ...] = (512, 256, 128, 64)
    depths: tuple[int, ...] = (3, 4, 6, 3)
    d_state: int = 16
    headdim: int = 32
    expand: int = 2
    ngroups: int = 1
    chunk_size: int = 64
    scan_plan: str | dict = "uniform"
    curve: str | None = None
    num_directions: int | None = None
    path_mode: str = "sum"
    matrix_causal: bool = False
    matrix_max_tokens: int = 1024
    matrix_impl: str = "scan"
    stack_scans: bool = False
    compile_mixer: str = "off"
    compile_memory_budget: float | None = None
    checkpoint_matrix: bool = True
    checkpoint_block: bool = False
    checkpoint_stages: tuple[int, ...] = ()
    scan_float32: bool = False
    position_aware: bool = True
    rope_fraction: float = 0.5
    dwconv: bool = True
    bc_norm: bool = True
    use_fft: bool = True
    local_kernels: tuple[int, ...] = (5, 7)
    drop_path: float = 0.2
    backend: str = "auto"

    def __post_init__(self):
        self.dims, self.depths = tuple(self.dims), tuple(self.depths)
        self.local_kernels = tuple(self.local_kernels)
        self.checkpoint_stages = tuple(self.checkpoint_stages)
        budget = self.compile_memory_budget
        if isinstance(budget, numbers.Real) and not isinstance(budget, bool):
            self.compile_memory_budget = float(budget)  # 1 from JSON or --set is 1.0
        self.validate()

    def validate(self) -> None:
        """Raise ValueError (TypeError for a non-int size) naming the first bad setting."""
        _one_of("model", self.model, MODELS)
        _one_of("path_mode", self.path_mode, PATH_MODES)
        _one_of("backend", self.backend, BACKENDS)
        _one_of("matrix_impl", self.matrix_impl, MATRIX_IMPLS)
        _one_of("compile_mixer", self.compile_mixer, COMPILE_MODES)
        if self.model == "mambaad" and self.compile_mixer != "off":
            raise ValueError(f"compile_mixer={self.compile_mixer!r} compiles MambaADv2's HSS "
                             "mixers; MambaAD (v1) has none: leave it 'off'")
        self._validate_memory_budget()
        if self.model == "mambaad" and (self.checkpoint_block or self.checkpoint_stages):
            raise ValueError("checkpoint_block / checkpoint_stages recompute MambaADv2's HSS "
                             "blocks; MambaAD (v1) has none: leave them off")
        if len(self.dims) != len(self.depths) or len(self.dims) != 4:
            raise ValueError(f"dims and depths must have 4 stages each, got dims={self.dims}, "
                             f"depths={self.depths}")
        for name in ("d_state", "headdim", "expand", "ngroups", "chunk_size",
                     "matrix_max_tokens", "image_size"):
            check_positive_int(name, getattr(self, name))
        if any(d < 1 for d in self.depths) or any(c < 4 or c % 4 for c in self.dims):
            raise ValueError(f"depths must be >= 1 and dims multiples of 4, got depths="
                             f"{self.depths}, dims={self.dims}")
        if self.image_size % 32:
            raise ValueError(f"image_size must be a multiple of 32, got {self.image_size}")
        if self.d_state % 2:
            raise ValueError(f"d_state must be even (rotary pairs), got {self.d_state}")
        if not 0.0 <= self.rope_fraction <= 1.0:
            raise ValueError(f"rope_fraction must be in [0, 1], got {self.rope_fraction}")
        if not 0.0 <= self.drop_path < 1.0:
            raise ValueError(f"drop_path must be in [0, 1), got {self.drop_path}")
        if any(k % 2 == 0 or k < 1 for k in self.local_kernels):
            raise ValueError(f"local_kernels must be odd, got {self.local_kernels}")
        if self.model == "mambaadv2":
            for dim in self.dims:
                d_inner = self.expand * dim
                if d_inner % self.headdim:
                    raise ValueError(
                        f"headdim={self.headdim} must divide the inner channels expand * dim = "
                        f"{d_inner} of every stage (dims={self.dims}, expand={self.expand})")
                if (d_inner // self.headdim) % self.ngroups:
                    raise ValueError(f"ngroups={self.ngroups} must divide the number of heads "
                                     f"{d_inner // self.headdim} (dim {dim})")
        stages = self.checkpoint_stages
        if (any(isinstance(s, bool) or not isinstance(s, int) for s in stages)
                or sorted(set(stages)) != list(stages) or not set(stages) <= set(range(4))):
            raise ValueError(f"checkpoint_stages must be increasing decoder stage indices in "
                             f"0..3 (0 = deepest), got {stages!r}")
        if self.compile_mixer == "reduce-overhead" and (self.checkpoint_block or stages):
            raise ValueError(
                "compile_mixer='reduce-overhead' with checkpoint_block / checkpoint_stages: the "
                "recomputation in the backward pass replays the mixers' CUDA graphs and "
                "overwrites the outputs the forward kept (measured on an H200, 2026-12-04: "
                "RuntimeError 'accessing tensor output of CUDAGraphs that has been overwritten'); "
                "use compile_mixer='default' to recompute, or no block checkpointing (or "
                "compile_memory_budget, which recomputes inside the compiled graphs)")
        if self.checkpoint_block and stages:
            raise ValueError(f"checkpoint_stages={stages!r} with checkpoint_block=True: the "
                             "block setting already recomputes every stage; set one of them")
        self.plan()  # raises ValueError naming a bad curve or direction count

    def _validate_memory_budget(self) -> None:
        """compile_memory_budget: None, or a real number (not a bool) in [0, 1], for compiled
        mixers of MambaADv2 only."""
        budget = self.compile_memory_budget
        if budget is None:
            return
        if (isinstance(budget, bool) or not isinstance(budget, numbers.Real)
                or not 0.0 <= budget <= 1.0):
            raise ValueError(f"compile_memory_budget must be None or a number in [0, 1] (the "
                             f"fraction of the default activations that the compiled mixers "
                             f"keep), got {budget!r}")
        if self.model == "mambaad":
            raise ValueError(f"compile_memory_budget={budget!r} sets the memory budget of "
                             "MambaADv2's compiled HSS mixers; MambaAD (v1) has none: leave it "
                             "None")
        if self.compile_mixer == "off":
            raise ValueError(f"compile_memory_budget={budget!r} with compile_mixer='off': the "
                             "budget acts when torch.compile partitions the mixers' graphs and "
                             "nothing is compiled; set compile_mixer (e.g. 'default' or "
                             "'reduce-overhead') or leave the budget None")

    def stage_config(self, stage: int) -> ModelConfig:
        """The config that the blocks of decoder stage `stage` are built with: the same, with
        `checkpoint_stages` resolved into that stage's `checkpoint_block` (True when the stage
        is listed or every block is recomputed)."""
        if not self.checkpoint_stages:
            return self
        return replace(self, checkpoint_block=stage in self.checkpoint_stages,
                       checkpoint_stages=())

    def plan(self) -> ScanPlan:
        """The scanning plan (deepest stage first) with the `curve`/`num_directions` overrides."""
        try:
            plan = resolve_plan(self.scan_plan, len(self.dims))
            if self.curve is not None or self.num_directions is not None:
                stages = tuple(replace(
                    st, **({"curve": self.curve} if self.curve is not None else {}),
                    **({"num_directions": self.num_directions}
                       if self.num_directions is not None else {})) for st in plan.stages)
                plan = ScanPlan(stages, name=f"{plan.name}+override")
        except (TypeError, ValueError) as err:
            raise ValueError(f"scan_plan={self.scan_plan!r}, curve={self.curve!r}, "
                             f"num_directions={self.num_directions!r}: {err}") from err
        return plan

    def to_dict(self) -> dict:
        """JSON-ready dict (tuples become lists)."""
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        """Inverse of to_dict; unknown keys raise ValueError naming them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig fields {unknown}; known: {sorted(known)}")
        return cls(**d)


def modules_per_stage(depth: int) -> list[int]:
    """Split a stage depth into HSS blocks per module (MambaAD): 6 -> [3, 3], 4 -> [2, 2],
    5 -> [5]."""
    if depth % 3 == 0:
        return [3] * (depth // 3)
    if depth % 2 == 0:
        return [2] * (depth // 2)
    return [depth]


def stage_sizes(image_size: int | tuple[int, int], num_stages: int = 4) -> list[tuple[int, int]]:
    """Token grid (H_s, W_s) of each decoder stage, deepest first: (H / 32) 2^s x (W / 32) 2^s.

    Args:
        image_size: side of a square image, or (H, W); multiples of 32.
        num_stages: decoder stages (4 in MambaAD / MambaADv2).
    """
    H, W = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if H % 32 or W % 32 or H < 32 or W < 32:
        raise ValueError(f"image_size must be multiples of 32, got {image_size!r}")
    return [(H // 32 * 2 ** s, W // 32 * 2 ** s)
            for s in range(check_positive_int("num_stages", num_stages))]


def preset(profile: str = "tiny", model: str = "mambaadv2", **overrides) -> ModelConfig:
    """The ModelConfig of a profile for one model, with field overrides.

    Args:
        profile: "tiny" | "small" | "paper".
        model: "mambaadv2" | "mambaad".
        overrides: any ModelConfig field.

    Raises:
        ValueError: unknown profile, model or field, or a bad value (named).
    """
    row = get_profile(profile)
    _one_of("model", model, MODELS)
    base = dict(row.model, image_size=row.image_size, model=model, profile=profile)
    if model == "mambaad":
        base.update(V1_DEFAULTS)
    unknown = sorted(set(overrides) - {f.name for f in fields(ModelConfig)})
    if unknown:
        raise ValueError(f"unknown model settings {unknown}")
    return ModelConfig(**{**base, **overrides})


def _one_of(name: str, value, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")
