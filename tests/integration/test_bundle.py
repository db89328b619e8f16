"""The PyInstaller one-folder lite app (packaging/build): built, then run with no venv on PATH
and no Python environment: `doctor --json`, and a lite `run` answering examples/question.wav.

Minutes of CPU: marked `bundle` (deselected by default) and `slow`; run it with
`flock /tmp/kame-heavy.lock .venv/bin/python -m pytest -m bundle tests/integration/test_bundle.py`
(KAME_BUNDLE_REUSE=1 tests an existing dist/kame-desktop instead of rebuilding it)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "dist" / "kame-desktop"

pytestmark = [pytest.mark.bundle, pytest.mark.slow, pytest.mark.timeout(3600)]


@pytest.fixture(scope="module")
def exe() -> Path:
    if not (os.environ.get("KAME_BUNDLE_REUSE") and (APP / "kame-desktop").exists()):
        subprocess.run([str(ROOT / "packaging" / "build")], cwd=ROOT, check=True, timeout=3000)
    return APP / "kame-desktop"


def bare_env(tmp_path: Path) -> dict[str, str]:
    """What a double-click gets: system PATH only, no Python variables, the user's folders."""
    keep = {k: os.environ[k] for k in ("HOME", "LANG", "TMPDIR") if k in os.environ}
    return {**keep, "PATH": "/usr/local/bin:/usr/bin:/bin", "QT_QPA_PLATFORM": "offscreen",
            "KAME_CONFIG_DIR": str(tmp_path / "config"), "KAME_DATA_DIR": str(tmp_path / "data"),
            "KAME_CACHE_DIR": str(tmp_path / "cache"), "KAME_LOG_DIR": str(tmp_path / "logs"), "HF_HUB_OFFLINE": "1"}


def test_the_bundle_holds_no_torch(exe):
    internal = exe.parent / "_internal"
    assert internal.is_dir()
    assert not (internal / "torch").exists() and not (internal / "moshi").exists()


def test_doctor_from_the_bundle(exe, tmp_path):
    proc = subprocess.run([str(exe), "doctor", "--json"], capture_output=True, text=True, cwd=tmp_path,
                          env=bare_env(tmp_path), timeout=300)
    report = json.loads(proc.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert proc.returncode == report["exit_code"] in (0, 1), proc.stdout  # no GPU or no sound card here: degraded
    assert {name for name, c in checks.items() if c["status"] == "fail"} == set(), proc.stdout
    assert checks["kame-desktop"]["detail"].endswith("(a one-folder bundle)")
    assert "not installed" in checks["kame-extra"]["detail"]
    assert checks["weights"]["status"] == "ok" and checks["qt-platform"]["status"] == "ok"


def test_a_lite_run_from_the_bundle(exe, tmp_path):
    out, timeline = tmp_path / "reply.wav", tmp_path / "timeline.jsonl"
    proc = subprocess.run([str(exe), "run", "--input", str(ROOT / "examples" / "question.wav"), "--output", str(out),
                           "--timeline", str(timeline), "--tail", "6"], capture_output=True, text=True, cwd=tmp_path,
                          env=bare_env(tmp_path), timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    records = [json.loads(line) for line in timeline.read_text().splitlines()]
    assert records[0]["kind"] == "session_start" and records[0]["frontend"] == "lite"
    heard = " ".join(r["text"] for r in records if r["kind"] == "asr_final")
    said = "".join(r["piece"] for r in records if r["kind"] == "assistant_token")
    assert "capital" in heard.lower() and said.strip(), (heard, said)
    assert out.stat().st_size > 44  # more than a WAV header: it spoke
    assert (tmp_path / "logs" / "kame-desktop.log").exists()
