"""Which scan implementation runs: pure PyTorch ("torch") or mamba-ssm's GPU kernels ("mamba_ssm").

mamba-ssm is imported lazily and inside try/except only, the package and its version included: on
a CPU-only machine (or after a failed build) `import mamba_ssm` fails with `ModuleNotFoundError:
No module named 'selective_scan_cuda'` (its `__init__` imports the compiled Mamba-1 extension
unconditionally); such a package counts as unavailable, with that reason. The Triton kernels also
need a CUDA device.

Kernel names:
    mamba_ssm_s6      mamba_ssm.ops.selective_scan_interface.selective_scan_fn (CUDA extension)
    mamba_ssm_ssd     mamba_ssm.ops.triton.ssd_combined.mamba_chunk_scan_combined (Triton)
    mamba_ssm_mamba3  mamba_ssm.ops.triton.mamba3.mamba3_siso_combined.mamba3_siso_combined
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable

import torch

BACKENDS = ("auto", "torch", "mamba_ssm")
_KERNELS = {
    "mamba_ssm_s6": ("mamba_ssm.ops.selective_scan_interface", "selective_scan_fn"),
    "mamba_ssm_ssd": ("mamba_ssm.ops.triton.ssd_combined", "mamba_chunk_scan_combined"),
    "mamba_ssm_mamba3": ("mamba_ssm.ops.triton.mamba3.mamba3_siso_combined",
                         "mamba3_siso_combined"),
}


@functools.cache
def _load(kernel: str) -> tuple[Callable | None, str]:
    """Import one mamba-ssm kernel; return (function or None, reason)."""
    module_name, attr = _KERNELS[kernel]
    try:
        # the package first: a kernel module can sit in sys.modules from an earlier import that
        # failed half-way (mamba_ssm's __init__ raising), and then imports without its package
        package = importlib.import_module("mamba_ssm")
        module = importlib.import_module(module_name)
        fn = getattr(module, attr)
        if kernel == "mamba_ssm_s6":
            ext = importlib.import_module("selective_scan_cuda")
            if not hasattr(ext, "fwd"):
                return None, ("selective_scan_cuda is a placeholder without fwd: the Mamba-1 CUDA "
                              "extension was not compiled")
    except Exception as err:  # ImportError, or anything a broken install raises at import
        return None, f"{type(err).__name__}: {err}"
    version = getattr(package, "__version__", "?")
    return fn, f"mamba_ssm {version} {module_name}.{attr}"


def available_backends() -> dict[str, tuple[bool, str]]:
    """Report which scan backends can run here.

    Returns:
        dict name -> (available, reason) for "torch", "mamba_ssm_s6", "mamba_ssm_ssd" and
        "mamba_ssm_mamba3". A mamba-ssm kernel is available when it imports and CUDA is present.
    """
    result = {"torch": (True, f"pure PyTorch {torch.__version__}")}
    for kernel in _KERNELS:
        fn, reason = _load(kernel)
        if fn is not None and not torch.cuda.is_available():
            result[kernel] = (False, f"imports ({reason}) but CUDA is not available")
        else:
            result[kernel] = (fn is not None, reason)
    return result


def resolve_backend(backend: str, kernel: str, *tensors: torch.Tensor | None) -> str:
    """Choose "torch" or "mamba_ssm" for one call.

    Args:
        backend: "auto", "torch" or "mamba_ssm".
        kernel: one of the mamba-ssm kernel names above.
        tensors: the call's tensors (None entries ignored).
    Returns:
        "torch" or "mamba_ssm". "auto" picks mamba_ssm only when the kernel imports, every tensor
        is on CUDA and none is float64 (the kernels have no float64 path).
    Raises:
        ValueError: unknown backend name.
        RuntimeError: backend="mamba_ssm" where the kernel cannot run (the message says why).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "torch":
        return "torch"
    present = [t for t in tensors if t is not None]
    fn, reason = _load(kernel)
    problem = None
    if fn is None:
        problem = reason
    elif not all(t.is_cuda for t in present):
        problem = "mamba-ssm kernels need CUDA tensors"
    elif any(t.dtype == torch.float64 for t in present):
        problem = "mamba-ssm kernels do not support float64"
    if problem is None:
        return "mamba_ssm"
    if backend == "mamba_ssm":
        raise RuntimeError(f"backend='mamba_ssm' cannot run {kernel}: {problem}")
    return "torch"


def kernel(kernel_name: str) -> Callable:
    """Return the imported mamba-ssm kernel (call `resolve_backend` first)."""
    fn, reason = _load(kernel_name)
    if fn is None:
        raise RuntimeError(f"{kernel_name} is unavailable: {reason}")
    return fn
