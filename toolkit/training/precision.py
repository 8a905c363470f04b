"""Choosing the mixed-precision mode, and saying why, instead of letting Accelerate silently fall back to fp32."""

from __future__ import annotations

import os

import torch


def cpu_has_native_bf16() -> bool:
    """True when oneDNN reports native bf16 (AVX512-BF16 or AMX), where bf16 autocast is faster than fp32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_mixed_precision(requested: str, device_type: str) -> tuple[str, str]:
    """Map `auto|no|fp16|bf16` to what Accelerate should use on `device_type`, with a one-line reason."""
    if device_type == "cuda":
        bf16_ok = torch.cuda.is_bf16_supported()
        if requested == "auto":
            return ("bf16", "CUDA GPU with bf16 support") if bf16_ok else ("fp16", "CUDA GPU without bf16: fp16")
        if requested == "bf16" and not bf16_ok:
            return "fp16", "bf16 was asked for but this GPU does not support it: using fp16"
        return requested, f"{requested} as asked"
    if device_type != "cpu":
        return ("no", f"{device_type}: fp32 (auto)") if requested == "auto" else (requested, f"{requested} as asked")
    native = cpu_has_native_bf16()
    if requested == "auto":
        if native:
            return "bf16", "CPU has native bf16 (AVX512-BF16/AMX): bf16 autocast, about 2x faster than fp32"
        return "no", "CPU lacks native bf16, where bf16 autocast is slower: fp32"
    if requested == "fp16":
        return "no", ("fp16 autocast is not supported on CPU (Accelerate would silently run fp32): using fp32; "
                      "pass --mixed_precision bf16 for the fast CPU path")
    if requested == "bf16" and not native:
        return "bf16", "bf16 as asked, but this CPU has no native bf16: expect it to be slower than fp32"
    return requested, f"{requested} as asked"


def set_cpu_threads(requested: int | None, num_processes: int) -> str:
    """Set torch's CPU threads (default: usable cores / processes) and say why.

    `accelerate launch` sets OMP_NUM_THREADS=1 unless told otherwise, which halves training speed on a 2-core CPU.
    """
    if requested is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        threads = max(1, cores // num_processes)
        reason = f"{cores} usable cores / {num_processes} process(es)"
    else:
        threads, reason = requested, "as asked"
    torch.set_num_threads(threads)
    return f"CPU threads: {threads} ({reason})"


def weight_dtype(mixed_precision: str) -> torch.dtype:
    """The dtype frozen weights are kept in under Accelerate's `mixed_precision` (fp32 for "no")."""
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mixed_precision, torch.float32)
