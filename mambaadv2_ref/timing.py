"""Wall-clock timing of a callable on CPU or CUDA, and its peak memory.

CUDA work is asynchronous: the device is synchronised before the clock is read, after warm-up
calls that keep compilation and allocation out of the numbers.
"""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable

import torch


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_call(fn: Callable[[], object], device: torch.device, warmup: int = 2,
                     iters: int = 5, repeats: int = 1) -> float:
    """Median over `repeats` of the mean time of `iters` calls of `fn`, after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        synchronize(device)
        times.append((time.perf_counter() - t0) / iters)
    return statistics.median(times)


def saved_for_backward_bytes(fn: Callable[[], object]) -> int:
    """Bytes of the tensors that autograd keeps for the backward pass while `fn()` runs (each
    storage counted once): the activation memory of a training step, on any device, without
    running the backward pass. Parameters saved by their ops are counted too."""
    seen: set[tuple[int, int]] = set()
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        if key not in seen:
            seen.add(key)
            total += key[1]
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


def reset_peak_memory(device: torch.device) -> None:
    """Start a new CUDA peak-memory window (CPU: nothing to reset)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_bytes(device: torch.device) -> int:
    """CUDA: max allocated since the last reset; CPU: the process's max resident set size
    (whole process, cumulative)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
