"""Which device and autocast precision a job runs on: one rule for every command."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

AMP_MODES = ("none", "bf16", "fp16", "auto")


def resolve_device(name: str | torch.device) -> torch.device:
    """``"auto"``: the GPU when there is one, else the CPU; a device that is not there is
    an error, not a crash later."""
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"unknown device {str(name)!r}: expected auto, cpu, cuda or cuda:N"
                         ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(name)!r} requested but CUDA is not available on "
                             "this machine: use the cpu device")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(name)!r} does not exist: this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        raise ValueError(f"device {str(name)!r} is not supported: expected auto, cpu, cuda or "
                         "cuda:N")
    return dev


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes in bf16 natively (AVX512-BF16 or AMX). Without it PyTorch
    emulates bf16 and autocast is slower than fp32: on an AVX2-only AMD EPYC (2026-12-01,
    one thread, ``benchmarks/amp_cpu_step.py``) a training step of edsr_baseline took 11.8x
    and of CIFAR ResNet-56 12.6x as long as in fp32."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    try:
        return any(getattr(torch.cpu, name)() for name in probes if hasattr(torch.cpu, name))
    except RuntimeError:
        return False


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``amp`` on ``device``; None for fp32. ``auto``: bf16 on a GPU
    and on a CPU with native bf16 (:func:`cpu_has_native_bf16`), fp32 on other CPUs."""
    if amp not in AMP_MODES:
        raise ValueError(f"amp must be one of {', '.join(AMP_MODES)}, got {amp!r}")
    if amp == "auto":
        amp = "bf16" if device.type != "cpu" or cpu_has_native_bf16() else "none"
    if amp == "none":
        return None
    if amp == "fp16" and device.type != "cuda":
        raise ValueError("fp16 autocast needs a CUDA device; use bf16 on a CPU")
    return torch.bfloat16 if amp == "bf16" else torch.float16


def amp_setting(amp: str, device: torch.device) -> str:
    """``amp`` as a setting that means the same on every machine: ``auto`` becomes what it
    is on ``device`` here (``bf16`` or ``none``). A run stores this, so that resumed on a
    machine where ``auto`` means otherwise it keeps its numerics."""
    dtype = resolve_amp(amp, device)
    return "none" if dtype is None else "bf16" if dtype == torch.bfloat16 else "fp16"


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager:
    """``torch.autocast`` for ``dtype``, or nothing for fp32."""
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
