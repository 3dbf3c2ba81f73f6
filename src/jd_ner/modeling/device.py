"""Where the model runs, and in which precision."""

from __future__ import annotations

import torch


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX): there bf16 matrix
    products run ~4x faster than fp32; elsewhere bf16 would be emulated, and slower."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


AMP_DTYPES = ("auto", "bfloat16", "float16")


def autocast_dtype(device: torch.device, amp: bool, prefer: str = "auto") -> torch.dtype | None:
    """The mixed-precision dtype for ``device``, or None for full precision.

    With ``amp``: bf16 on CUDA where supported, else fp16 (with loss scaling); bf16 on a CPU
    that has it natively; full precision on other CPUs. ``prefer`` (``bfloat16``/``float16``)
    forces one half type on CUDA. Weights, optimizer state and the losses stay fp32 either
    way (autocast runs only matrix products and the like in half precision).
    """
    if prefer not in AMP_DTYPES:
        raise ValueError(f"amp_dtype must be one of {AMP_DTYPES}, not {prefer!r}")
    if not amp:
        return None
    if device.type == "cuda":
        if prefer != "auto":
            return getattr(torch, prefer)
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return None
