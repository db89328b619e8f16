"""Which front-end to run: KAME where a GPU has room for it and its weights are here, else
lite; always with the reason, so the user knows why (and what would change it)."""

from __future__ import annotations

from dataclasses import dataclass

from kame_desktop.choices import DEFAULT_KAME_REPO, FRONTEND_KINDS, check_choice


@dataclass(frozen=True)
class Choice:
    kind: str  # "kame" or "lite"
    checkpoint: str | None
    reason: str


def kame_weights_cached(repo: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo, "config.json"), str)


def choose_frontend(requested: str = "auto", checkpoint: str | None = None, device: str = "auto") -> Choice:
    if checkpoint is not None:
        return Choice("kame", checkpoint, "a KAME checkpoint was given")
    if requested == "kame":
        return Choice("kame", DEFAULT_KAME_REPO, "the KAME front-end was asked for")
    if requested == "lite":
        return Choice("lite", None, "the lite front-end was asked for")
    check_choice(requested, FRONTEND_KINDS, "front-end")

    import torch

    from kame_desktop.compute import free_memory_bytes, pick_device
    from kame_desktop.frontend.kame.checkpoint import estimate_memory, moshi_7b_kwargs

    gpu = pick_device(device)
    if gpu.type == "cpu":
        return Choice("lite", None, "no CUDA or Apple MPS GPU: KAME needs one")
    free = free_memory_bytes(gpu)
    need = estimate_memory(moshi_7b_kwargs(), torch.bfloat16, int8=gpu.type == "cuda").total_bytes
    if free is not None and free < need:
        return Choice("lite", None, f"{gpu} has {free / 1e9:.1f} GB free; KAME needs about {need / 1e9:.0f} GB")
    if not kame_weights_cached(DEFAULT_KAME_REPO):
        return Choice(
            "lite", None, f"the KAME weights ({DEFAULT_KAME_REPO}) are not downloaded; choose the KAME front-end to get them"
        )
    return Choice("kame", DEFAULT_KAME_REPO, f"{gpu} has room for KAME and its weights are here")
