"""Shared fixtures: a tiny random KAME checkpoint in the real on-disk layout, built once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a model hub


def _has_gpu() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return torch.cuda.is_available() or (mps is not None and mps.is_available())


def pytest_collection_modifyitems(config, items):
    if any("gpu" in item.keywords for item in items) and not _has_gpu():
        skip = pytest.mark.skip(reason="needs a CUDA or MPS device")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A tiny KAME checkpoint folder (read-only for tests: copy it before changing files)."""
    from kame_desktop.frontend.kame.tiny import make_tiny_checkpoint

    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-kame")


@pytest.fixture
def tiny_checkpoint_copy(tiny_checkpoint, tmp_path) -> Path:
    """A private copy of the tiny checkpoint that a test may corrupt."""
    import shutil

    return Path(shutil.copytree(tiny_checkpoint, tmp_path / "tiny-kame"))
