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

Setting `compile_memory_budget` (a float in [0, 1]; None: torch's own choice) sets
`torch._functorch.config.activation_memory_budget` while the compiled mixers run: when
AOTAutograd splits a mixer's traced forward and backward (at its first call and at every
recompile) it then keeps at most about that fraction of the activations that its default
min-cut choice would keep and recomputes the rest inside the compiled backward graph. The
same function (tested forward and backward); less memory for more backward work. Unlike
`checkpoint_block` it stays inside the compiled graphs, so it can combine with
"reduce-overhead"'s CUDA graphs. Measured (2026-12-04, CPU, torch 2.14.1, compile mode
"default", one HSS block of 16 channels in float64 on 30 tokens, windows of 7,
`checkpoint_matrix` off; `timing.saved_for_backward_bytes` of its forward, the eager LayerNorm
included): eager 2.22 MB; compiled 1.97 MB under torch's default (None or 1.0), 0.54 MB at 0.5
and 0.3 (the knapsack's choice is coarse), 0.31 MB at 0.2, 0.19 MB at 0.1, 0.04 MB at 0; with
`checkpoint_matrix` on 1.10 MB eager, 0.86, 0.22, 0.22, 0.19, 0.10 and 0.04 MB. What that buys
on a GPU, and at what speed, is not measured yet (rows "v2 compiled reduce-overhead budget"
of `studies.gpu_sitting`). Dynamo shares one compiled graph among the mixers of every model of a
process (the weights are graph inputs; dynamo does not guard on the budget), so one budget holds
per process: building or running a mixer under another one raises, until
`reset_compiled_mixers`.
"""

from __future__ import annotations

from contextlib import nullcontext

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


def compile_mixer(mixer: nn.Module, mode: str, budget: float | None = None) -> nn.Module:
    """Compile `mixer` in place (`nn.Module.compile`: parameters and state_dict unchanged).

    Args:
        mixer: an HSS module. mode: a `torch.compile` mode ("default", "reduce-overhead",
            "max-autotune-no-cudagraphs"). budget: the activation memory budget its calls will
            run under (`memory_budget`; None: torch's own), claimed for the process here
            (`claim_memory_budget`): the caller runs the mixer inside `memory_budget(budget)`.
    Returns:
        the same module, whose calls now run the compiled graph (static shapes).
    Raises:
        RuntimeError: another budget holds in this process, or torch has no
            activation_memory_budget (torch < 2.4).
    """
    claim_memory_budget(budget)
    config = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):  # renamed across torch versions
        if hasattr(config, name):
            setattr(config, name, max(getattr(config, name), RECOMPILE_LIMIT))
    mixer.compile(options=compile_options(mode), dynamic=False)
    return mixer


# the activation memory budget that this process's compiled mixers were built or ran under since
# the last `reset_compiled_mixers` (None: none yet); see `claim_memory_budget`
_claimed_budget: float | None = None


def effective_budget(budget: float | None) -> float:
    """The activation memory budget that AOTAutograd's partitioner applies under `budget`: the
    value itself, or for None torch's global `torch._functorch.config.activation_memory_budget`
    (1.0 unless changed).

    Implements: no equation; raises RuntimeError when torch has no such setting (torch < 2.4).
    """
    functorch_config = torch._functorch.config
    if not hasattr(functorch_config, "activation_memory_budget"):
        raise RuntimeError(
            f"compile_memory_budget needs torch._functorch.config.activation_memory_budget "
            f"(torch >= 2.4); this torch {torch.__version__} has none")
    return functorch_config.activation_memory_budget if budget is None else float(budget)


def claimed_budget() -> float | None:
    """The budget claimed in this process since the last `reset_compiled_mixers` (None: none)."""
    return _claimed_budget


def claim_memory_budget(budget: float | None) -> None:
    """Record `effective_budget(budget)` as the budget of this process's compiled mixers.

    Dynamo caches one compiled graph per code and guards (not per module, and not on
    torch._functorch.config), so every HSS mixer of the same shapes, in any model, replays the
    partition of whichever mixer compiled first: a model under another budget would silently run
    the first one's. Hence one budget per process, until `reset_compiled_mixers`.

    Implements: no equation; raises RuntimeError naming both budgets on a conflict.
    """
    global _claimed_budget
    wanted = effective_budget(budget)
    if _claimed_budget is not None and wanted != _claimed_budget:
        raise RuntimeError(
            f"compile_memory_budget {wanted} in a process whose compiled HSS mixers run under "
            f"{_claimed_budget}: torch.compile shares one graph (and its save-or-recompute "
            "choice) among the mixers of every model, so one budget holds per process. Call "
            "mambaadv2_ref.blocks.compiled.reset_compiled_mixers() first (torch._dynamo.reset(): "
            "every compiled graph is dropped; a model built before it under another budget then "
            "refuses to run), or run the other budget in its own process")
    _claimed_budget = wanted


def reset_compiled_mixers() -> None:
    """Forget every compiled graph of the process (`torch._dynamo.reset()`) and the claimed
    budget, so that a mixer under another budget can compile; mixers compiled before recompile
    at their next call (from the disk caches where they hold the graph).

    Implements: no equation.
    """
    global _claimed_budget
    torch._dynamo.reset()
    _claimed_budget = None


def memory_budget(budget: float | None):
    """The context that a compiled mixer is called in: `torch._functorch.config.patch(
    activation_memory_budget=budget)` (for None: no patch, torch's own), after checking the
    budget against the process's claim (`claim_memory_budget`). Enter it outside the compiled
    region (around the mixer's call): the partition is chosen when AOTAutograd compiles at the
    first call and at recompiles, not when `compile_mixer` runs.

    Implements: no equation; the compiled mixer computes eqs. (1)-(8) unchanged.
    """
    claim_memory_budget(budget)
    if budget is None:
        return nullcontext()
    return torch._functorch.config.patch(activation_memory_budget=float(budget))


def compile_notice(config) -> str | None:
    """The message to print before the first step of a model whose mixers are compiled."""
    if getattr(config, "compile_mixer", "off") == "off":
        return None
    budget = getattr(config, "compile_memory_budget", None)
    budget_text = "" if budget is None else f", activation memory budget {budget}"
    return (f"compiling the HSS mixers (torch.compile, mode {config.compile_mixer!r}"
            f"{budget_text}): the first step traces and compiles one graph per stage shape, "
            "forward and backward; at the paper profile this takes minutes (cached on disk for "
            "the next run)")
