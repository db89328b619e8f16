"""scripts/gpu-check and `bench frontend --shape 7b` on a machine without a GPU: the dry run
builds every check on CPU/meta (so the script cannot rot until someone has a GPU), and the 7B
timing code runs end to end with a small stand-in model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kame_desktop.bench import frontend as bench
from kame_desktop.frontend.kame import checkpoint as ckpt
from kame_desktop.frontend.kame.tiny import TINY_LM_KWARGS, tiny_mimi_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_check_dry_run_builds_every_check_and_prints_the_plan(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gpu-check"), "--dry-run", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "plan:" in proc.stdout
    report = json.loads((tmp_path / "gpu-check.json").read_text())
    assert report["dry_run"] is True
    expected = {"1_gpu_tests", "2_graphs_vs_eager", "2_oracle_vs_pad", "2_input_order", "3_reset_after_capture",
                "4_no_host_sync", "5_7b_bf16", "6_7b_int8", "7_restart", "8_two_threads"}
    assert set(report["steps"]) == expected
    assert report["summary"]["failed"] == [], {s: report["steps"][s].get("error") for s in report["summary"]["failed"]}
    assert report["steps"]["5_7b_bf16"]["parameters_ok"] is True
    assert report["steps"]["7_restart"]["released_on_cpu"] is True
    assert "3 tests collected" in report["steps"]["1_gpu_tests"]["summary"]
    assert (tmp_path / "gpu-check.log").read_text()


def test_bench_7b_on_meta_is_the_plan_with_the_released_shapes():
    result = bench.run_bench(shape="7b", device="meta", threads=torch.get_num_threads())
    assert result["ran"] is False and result["parameters_ok"] is True
    assert result["oracle_emb"] == [32001, 4096]
    assert 15 < result["estimate_gb"] < 20


def test_bench_rejects_an_unknown_shape():
    from kame_desktop.errors import KameError

    with pytest.raises(KameError, match="--shape"):
        bench.run_bench(shape="13b", threads=torch.get_num_threads())


def test_the_7b_timing_path_runs_on_a_cpu_with_a_small_stand_in(monkeypatch):
    """run_7b's phases (eager, then graphed after a reset), memory and release, with the 7B
    config swapped for the tiny one (on a GPU it runs the real shape)."""
    small = dict(TINY_LM_KWARGS, text_card=400)
    monkeypatch.setattr(ckpt, "moshi_7b_kwargs", lambda: dict(small))
    from moshi.models.loaders import get_mimi

    monkeypatch.setattr(bench, "full_mimi", lambda device, n=8: get_mimi(None, tiny_mimi_config(), device=device, num_codebooks=n).eval())
    result = bench.run_7b(torch.device("cpu"), frames=3, time_limit_s=10)
    assert result["ran"] is True and result["oracle_emb_dtype"] == "float32"
    for phase in ("eager", "graphed"):
        assert result[phase]["frames"] == 3 and result[phase]["p99_ms"] >= result[phase]["p50_ms"] > 0
