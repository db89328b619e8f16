"""GPU paths of the KAME front-end (CUDA, MPS, bf16, int8, CUDA graphs). Skipped without a device."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kame_desktop.events import FRAME_SIZE, OracleReset, OracleText, OracleTokenEvent
from kame_desktop.frontend.kame.engine import KameFrontEnd

pytestmark = pytest.mark.gpu

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def gpu_device() -> str:
    return "cuda" if torch.cuda.is_available() else "mps"


def run_frames(frontend: KameFrontEnd, n: int = 24) -> list:
    rng = np.random.default_rng(0)
    results = []
    for i in range(n):
        signals = [OracleReset(0), OracleText(0, "The capital of France is Paris.")] if i == 2 else []
        results.append(frontend.step(rng.standard_normal(FRAME_SIZE).astype(np.float32) * 0.1, signals))
    return results


def test_auto_device_prefers_the_gpu_and_bf16(tiny_checkpoint):
    frontend = KameFrontEnd.load(str(tiny_checkpoint), device="auto", temperature=0)
    assert frontend.device.startswith(gpu_device())
    assert frontend.lm.dtype == torch.bfloat16
    results = run_frames(frontend)
    assert all(r.pcm.shape == (FRAME_SIZE,) and np.isfinite(r.pcm).all() for r in results)
    assert any(isinstance(e, OracleTokenEvent) for r in results for e in r.events)


@cuda
def test_cuda_graphs_match_eager_greedy(tiny_checkpoint, monkeypatch):
    graphed = run_frames(KameFrontEnd.load(str(tiny_checkpoint), device="cuda", dtype="fp32", temperature=0))
    monkeypatch.setenv("NO_CUDA_GRAPH", "1")
    eager = run_frames(KameFrontEnd.load(str(tiny_checkpoint), device="cuda", dtype="fp32", temperature=0))
    for a, b in zip(graphed, eager, strict=True):
        assert a.events == b.events
        np.testing.assert_allclose(a.pcm, b.pcm, atol=1e-4)


@cuda
def test_int8_loads_and_streams(tiny_checkpoint):
    pytest.importorskip("bitsandbytes")
    frontend = KameFrontEnd.load(str(tiny_checkpoint), device="cuda", int8=True, temperature=0)
    from moshi.utils.quantize import QLinear

    assert any(isinstance(m, QLinear) for m in frontend.lm.transformer.modules())
    results = run_frames(frontend, 12)
    assert all(np.isfinite(r.pcm).all() for r in results)
