"""Compute device and dtype choice: cuda > mps > cpu unless the user says otherwise; bf16 on a
GPU, fp32 on a CPU (bf16 matmuls are slow there and tests compare runs token for token)."""

from __future__ import annotations

import torch

from kame_desktop.errors import DeviceError

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


def mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError("CUDA was requested but no CUDA GPU is available; use --device auto or cpu")
    if device.type == "mps" and not mps_available():
        raise DeviceError("Apple MPS was requested but is not available; use --device auto or cpu")
    return device


def parse_dtype(name: str | None, device: torch.device) -> torch.dtype:
    if name is None or name == "auto":
        return torch.float32 if device.type == "cpu" else torch.bfloat16
    try:
        return DTYPES[name.lower()]
    except KeyError:
        raise DeviceError(f"unknown dtype '{name}'; use one of {', '.join(sorted(DTYPES))}") from None


def free_memory_bytes(device: torch.device) -> int | None:
    """Free memory on a GPU, or None where it cannot be known (CPU, MPS)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    return None
