"""torch.compile of the HSS mixer (setting `compile_mixer`): the same function, fewer kernels.

On a GPU the HSS step is bound by launching thousands of small kernels (the rotary phases, the
trapezoid weights, the chunked scans' masks and the gathers of the scan directions), not by
arithmetic. `torch.compile` traces one mixer's forward (eqs. 1-8 without the residual) and its
backward into a graph and fuses those elementwise kernels; mode "reduce-overhead" also replays
the graph as a CUDA graph (one launch). The eager module stays the obviously-correct twin
(`compile_mixer="off"`, the default); tests check the two agree, forward and backward.

Each stage's mixers share one compiled graph (same code, same shapes: the weights are graph
inputs), so a model compiles one graph per distinct stage shape, forward and backward; the
first training step pays it (minutes at the paper profile; inductor caches it on disk).

Measured (2026-12-02): on a CPU (torch 2.14.1, tiny profile, batch 2, 2 threads) the compiled
model trains 1.41x and infers 1.5x faster than eager (first step 105 s). On an H200 (torch
2.11.0+cu130) two profiled paper-profile training steps took 228 ms of CUDA time against 604 ms
eager. The inference graph failed in inductor's Triton codegen until loop reordering after fusion
was turned off (INDUCTOR_OPTIONS). With it off, the speed bench (paper profile, batch 16) gave
124 / 346 img/s (train / infer) in fp32 and 121 / 333 in bf16, against 103 / 294 and 138 / 310
for MambaAD v1 with mamba-ssm's CUDA scan on the same machine; the fp32 training peak is 17.3 GiB
and the first step compiles for about two minutes. Off by default: CPU and Colab users would pay
the compile for a small gain.
"""

from __future__ import annotations

import torch
from torch import nn

# distinct (stage, batch size) shapes one model may compile before dynamo gives up recompiling
RECOMPILE_LIMIT = 64

# inductor settings added to every mode's own. Loop reordering after fusion (a scheduling
# pass, on by default in torch 2.11 and 2.14) made Triton codegen fail on the no-grad
# (inference) graph of the paper-profile mixer on an H200 with torch 2.11 ("list indices must
# be integers or slices, not NoneType" in get_block_shape); with it off the same graph
# compiles. It only orders loops: the computed function is the same (the tests compare
# compiled and eager).
INDUCTOR_OPTIONS = {"loop_ordering_after_fusion": False}


def compile_options(mode: str) -> dict:
    """The inductor options of `torch.compile` mode `mode` plus INDUCTOR_OPTIONS (torch.compile
    takes a mode or options, not both).

    Implements: no equation; the compiled graph computes the mixer's eqs. (1)-(8) unchanged.
    """
    from torch._inductor import list_mode_options

    return {**list_mode_options(mode), **INDUCTOR_OPTIONS}


def compile_mixer(mixer: nn.Module, mode: str) -> nn.Module:
    """Compile `mixer` in place (`nn.Module.compile`: parameters and state_dict unchanged).

    Args:
        mixer: an HSS module. mode: a `torch.compile` mode ("default", "reduce-overhead",
            "max-autotune-no-cudagraphs").
    Returns:
        the same module, whose calls now run the compiled graph (static shapes).
    """
    config = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):  # renamed across torch versions
        if hasattr(config, name):
            setattr(config, name, max(getattr(config, name), RECOMPILE_LIMIT))
    mixer.compile(options=compile_options(mode), dynamic=False)
    return mixer


def compile_notice(config) -> str | None:
    """The message to print before the first step of a model whose mixers are compiled."""
    if getattr(config, "compile_mixer", "off") == "off":
        return None
    return (f"compiling the HSS mixers (torch.compile, mode {config.compile_mixer!r}): the first "
            "step traces and compiles one graph per stage shape, forward and backward; at the "
            "paper profile this takes minutes (cached on disk for the next run)")
