"""Compute device and dtype choice: cuda > mps > cpu unless the user says otherwise; bf16 on a
GPU that supports it, fp32 on a CPU (bf16 matmuls are slow there and tests compare runs token
for token). Also what every GPU user in the process shares: the lock around streaming steps,
the compile guard and the release of cached device memory."""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import platform
import threading
from collections.abc import Iterator

import torch

from kame_desktop.errors import DeviceError

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}
MPS_BF16_MACOS = (14, 0)  # Metal has bfloat16 from macOS 14 (Sonoma) on

# moshi's CUDAGraphed keeps one process-global "capturing" flag and asserts on it, so two
# graphed models stepping on two threads (KAME on the inference thread, Kyutai STT on the ASR
# thread) would trip it or silently run eagerly. Every streaming step of a moshi model (Mimi
# encode/decode, LM step) takes this lock. Re-entrant: a step may call another guarded step.
STEP_LOCK = threading.RLock()


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


def macos_version() -> tuple[int, ...]:
    """(major, minor) of macOS, or () elsewhere."""
    release = platform.mac_ver()[0]
    try:
        return tuple(int(part) for part in release.split(".")[:2]) if release else ()
    except ValueError:
        return ()


def mps_supports_bf16() -> bool:
    return macos_version() >= MPS_BF16_MACOS


def parse_dtype(name: str | None, device: torch.device) -> torch.dtype:
    if name is None or name == "auto":
        if device.type == "cpu":
            return torch.float32
        if device.type == "mps" and not mps_supports_bf16():
            return torch.float16  # Moshi runs in fp16 too (the reference's --half)
        return torch.bfloat16
    try:
        dtype = DTYPES[name.lower()]
    except KeyError:
        raise DeviceError(f"unknown dtype '{name}'; use one of {', '.join(sorted(DTYPES))}") from None
    if dtype == torch.bfloat16 and device.type == "mps" and not mps_supports_bf16():
        raise DeviceError("bf16 on Apple MPS needs macOS 14 or newer; use --dtype fp16 (or fp32)")
    return dtype


def dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def free_memory_bytes(device: torch.device) -> int | None:
    """Free memory on a GPU, or None where it cannot be known (CPU)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "mps":
        # Unified memory: what Metal recommends for one process, minus what it holds already.
        recommended = getattr(torch.mps, "recommended_max_memory", None)
        if recommended is None:  # torch < 2.5
            return None
        return max(0, int(recommended()) - int(torch.mps.driver_allocated_memory()))
    return None


def int8_unavailable_reason(device: torch.device) -> str | None:
    """Why int8 (moshi's bitsandbytes path) cannot load here, or None when it can."""
    if device.type != "cuda":
        return "int8 needs a CUDA GPU (bitsandbytes)"
    if importlib.util.find_spec("bitsandbytes") is None:
        return "int8 needs the bitsandbytes package: pip install 'kame-desktop[int8]'"
    return None


@contextlib.contextmanager
def streaming_step(device: torch.device | str) -> Iterator[None]:
    """Around one streaming step of a moshi model: hold the process-wide step lock, and keep
    moshi's lazy torch.compile off except on CUDA (no compiler on most desktops, and Inductor
    on MPS is young); moshi guards its transformer layers itself but not, e.g., the LM's
    out_norm."""
    from moshi.utils.compile import no_compile

    with STEP_LOCK, (no_compile() if torch.device(device).type != "cuda" else contextlib.nullcontext()):
        yield


def release_accelerator_memory() -> None:
    """Collect garbage (a model's CUDA-graph closures form cycles) and hand cached blocks back
    to the driver, so the next model can load into the memory the last one held."""
    gc.collect()
    if torch.cuda.is_initialized():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
    if mps_available():
        torch.mps.empty_cache()
