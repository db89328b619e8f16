"""Test-wide setup: no model hub, offscreen Qt, the `gpu` marker, the `isolated` settings
fixture, and the shared fixtures of tests/fixtures/ (one module per thing they serve)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a model hub
if "KAME_LOG_DIR" not in os.environ:  # the CLI's log file (logs.py): never the developer's own
    import tempfile

    os.environ["KAME_LOG_DIR"] = tempfile.mkdtemp(prefix="kame-test-logs-")

pytest_plugins = ["fixtures.checkpoint", "fixtures.llm", "fixtures.hub", "fixtures.mcp_servers", "fixtures.sound", "fixtures.speech", "fixtures.training", "fixtures.xserver"]


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


@pytest.fixture
def isolated(tmp_path, monkeypatch) -> Iterator[Path]:
    """Own config, data and log folders, no API key in the environment, and an empty in-memory
    keyring (the previous one restored after): settings, secrets and history tests never touch
    the developer's own. Yields the test's tmp_path."""
    import keyring
    from memory_keyring import MemoryKeyring

    monkeypatch.setenv("KAME_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("KAME_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("KAME_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.delenv("KAME_LLM_API_KEY", raising=False)
    previous = keyring.get_keyring()
    keyring.set_keyring(MemoryKeyring())
    yield tmp_path
    keyring.set_keyring(previous)
