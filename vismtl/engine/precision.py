"""Whether bfloat16 autocast (``--amp``) pays on this machine's CPU."""

from __future__ import annotations

import logging
import platform

import torch

log = logging.getLogger("vismtl")


def native_bfloat16() -> bool | None:
    """Whether this CPU has bfloat16 instructions (x86: AVX-512 BF16 or AMX), which oneDNN's
    convolutions use; None where it cannot tell (another architecture, or a PyTorch without
    the helpers)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    try:  # private helpers (PyTorch >= 2.3)
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:
        return None


def advise_amp(device: torch.device, amp: bool, suggest: bool = False) -> None:
    """On the CPU, warn where ``amp`` is asked for without bfloat16 instructions: oneDNN emulates
    them, and the histology quickstart ran at 0.61x float32's rate with AVX-512 alone, 0.24x with
    AVX2 (``benchmarks/histology_model_rate.py`` under ``ONEDNN_MAX_CPU_ISA``, docs/benchmarks.md);
    with ``suggest``, say where it is not asked for and would pay (the slide engine's ~2x)."""
    if device.type != "cpu":
        return
    native = native_bfloat16()
    if amp and native is False:
        log.warning("this CPU has no bfloat16 instructions: --amp runs the model 2-4x slower here; drop it")
    elif suggest and not amp and native:
        log.info("this CPU computes bfloat16 natively: --amp runs the model about twice as fast")
