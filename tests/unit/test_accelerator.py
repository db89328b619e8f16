"""accelerator.py: a GPU found without torch (what `auto` and scripts/app ask first), and the
one-line hint when the `kame` extra is missing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kame_desktop.errors import NotInstalledError
from kame_desktop.models import accelerator

ROOT = Path(__file__).resolve().parents[2]


def test_an_nvidia_driver_is_found_from_proc(tmp_path, monkeypatch):
    version = tmp_path / "version"
    version.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.14  Thu Feb 22 01:44:30 UTC 2024\n")
    monkeypatch.setattr(accelerator, "_NVIDIA_DRIVER", str(version))
    monkeypatch.setattr(sys, "platform", "linux")
    assert accelerator.gpu_hint() == "an NVIDIA GPU (driver 550.54.14)"


def test_no_driver_no_nvidia_smi_no_mac_is_no_gpu(tmp_path, monkeypatch):
    monkeypatch.setattr(accelerator, "_NVIDIA_DRIVER", str(tmp_path / "absent"))
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert accelerator.gpu_hint() is None


def test_the_script_scripts_app_runs_needs_only_the_standard_library():
    """Run with -S -I: no site-packages, as before anything is installed."""
    proc = subprocess.run([sys.executable, "-S", "-I", str(ROOT / "kame_desktop" / "models" / "accelerator.py")],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode in (0, 1), proc.stderr
    assert proc.stdout.strip() == (accelerator.gpu_hint() or "no NVIDIA or Apple Silicon GPU")


def test_require_kame_names_what_is_missing(monkeypatch):
    for name in ("torch", "moshi"):
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    with pytest.raises(NotInstalledError, match=r"needs torch and moshi: pip install 'kame-desktop\[kame\]'"):
        accelerator.require_kame()
    assert accelerator.kame_extra_missing() == ["torch", "moshi"]
