"""Which front-end to run: KAME where a GPU has room for it and its weights are here, else
lite; always with the reason, so the user knows why (and what would change it).

The choice also carries how to load KAME (device, dtype, int8), so the load runs exactly what
was sized. torch is imported only where a GPU is there to probe (accelerator.py asks without
it): `auto` works without torch (lite), and a lite session never loads it."""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass

from kame_desktop.choices import CHECKPOINT_NAMES, DEFAULT_KAME_REPO, FRONTEND_KINDS, check_choice
from kame_desktop.models.accelerator import KAME_EXTRA_HINT, gpu_hint


@dataclass(frozen=True)
class Choice:
    kind: str  # "kame" or "lite"
    checkpoint: str | None
    reason: str
    device: str = "auto"  # how to load KAME: pass these three to KameFrontEnd.load
    dtype: str | None = None  # None: the device's default
    int8: bool = False


def kame_weights_cached(repo: str) -> bool:
    """True when config.json and every file it names are in the local hub cache (so choosing
    KAME starts no download)."""
    import json
    from pathlib import Path

    from huggingface_hub import try_to_load_from_cache

    config = try_to_load_from_cache(repo, "config.json")
    if not isinstance(config, str):
        return False
    try:
        raw = json.loads(Path(config).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(raw, dict):
        return False
    names = [raw.get(key) or default for key, default in CHECKPOINT_NAMES.items()]  # None: optional, not set
    return all(_cached(repo, str(name)) for name in names if name)


def _cached(repo: str, name: str) -> bool:
    from pathlib import Path

    from huggingface_hub import try_to_load_from_cache

    if name.startswith("file://"):
        return Path(name.removeprefix("file://")).is_file()
    if name.startswith("hf://"):
        parts = name.removeprefix("hf://").split("/")
        repo, name = "/".join(parts[:2]), "/".join(parts[2:])
    return isinstance(try_to_load_from_cache(repo, name), str)


@functools.lru_cache(maxsize=8)
def kame_memory_bytes(dtype, int8: bool) -> int:
    """Bytes the released model needs (counted on a meta-device build, so done once)."""
    from kame_desktop.frontend.kame.checkpoint import estimate_memory, moshi_7b_kwargs

    return estimate_memory(moshi_7b_kwargs(), dtype, int8=int8).total_bytes


def choose_frontend(
    requested: str = "auto",
    checkpoint: str | None = None,
    device: str = "auto",
    *,
    dtype: str | None = None,
    int8: bool = False,
) -> Choice:
    """`dtype` and `int8` are the user's; with `auto`, int8 is also chosen when the model only
    fits that way and int8 can load here (CUDA + bitsandbytes)."""
    dtype = None if dtype == "auto" else dtype
    load = {"device": device, "dtype": dtype, "int8": int8}
    if checkpoint is not None:
        return Choice("kame", checkpoint, "a KAME checkpoint was given", **load)
    if requested == "kame":
        return Choice("kame", DEFAULT_KAME_REPO, "the KAME front-end was asked for", **load)
    if requested == "lite":
        return Choice("lite", None, "the lite front-end was asked for")
    check_choice(requested, FRONTEND_KINDS, "front-end")

    hint = gpu_hint()
    if device == "cpu" or (device == "auto" and hint is None):
        return Choice("lite", None, "no NVIDIA or Apple Silicon GPU: KAME needs one")
    try:
        from kame_desktop.models.compute import (
            dtype_name,
            free_memory_bytes,
            int8_unavailable_reason,
            parse_dtype,
            pick_device,
        )
    except ImportError:  # compute imports torch
        return Choice("lite", None, f"{hint or 'a GPU'} is here but torch is not installed: {KAME_EXTRA_HINT}")
    gpu = pick_device(device)
    if gpu.type == "cpu":
        return Choice("lite", None, "no CUDA or Apple MPS GPU: KAME needs one")
    if importlib.util.find_spec("moshi") is None:
        return Choice("lite", None, f"{gpu} is here but KAME's moshi package is not installed: {KAME_EXTRA_HINT}")
    torch_dtype = parse_dtype(dtype, gpu)
    free = free_memory_bytes(gpu)
    no_int8 = int8_unavailable_reason(gpu)
    if int8 and no_int8:
        return Choice("lite", None, f"{no_int8}; or turn int8 off")

    full, quantized = kame_memory_bytes(torch_dtype, False), kame_memory_bytes(torch_dtype, True)
    gb = 1e9
    if free is not None and int8 and free < quantized:
        return Choice("lite", None, f"{gpu} has {free / gb:.1f} GB free; KAME needs about {quantized / gb:.0f} GB in int8")
    use_int8 = int8
    if free is not None and not int8 and free < full:
        if no_int8 is not None or free < quantized:
            but = f", but {no_int8}" if no_int8 is not None and free >= quantized else ""
            return Choice(
                "lite",
                None,
                f"{gpu} has {free / gb:.1f} GB free; KAME needs about {full / gb:.0f} GB "
                f"({quantized / gb:.0f} GB in int8{but})",
            )
        use_int8 = True  # it fits only quantized, and int8 can load here
    if not kame_weights_cached(DEFAULT_KAME_REPO):
        return Choice(
            "lite", None, f"the KAME weights ({DEFAULT_KAME_REPO}) are not downloaded; choose the KAME front-end to get them"
        )
    how = dtype_name(torch_dtype) + (" with int8 weights" if use_int8 else "")
    return Choice(
        "kame",
        DEFAULT_KAME_REPO,
        f"{gpu} has room for KAME ({how}) and its weights are here",
        device=str(gpu),
        dtype=dtype_name(torch_dtype),
        int8=use_int8,
    )

