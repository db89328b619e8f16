"""Is there a GPU KAME could use, and is the `kame` extra (torch, moshi) installed: asked
without torch, with the standard library only.

`auto` asks this first, so a machine with no NVIDIA or Apple GPU picks lite without loading
torch; scripts/app runs this file (before anything is installed) to choose between the lite and
the KAME install. A "yes" is only a hint: compute.py (torch) has the last word on CUDA/MPS and
their free memory.
"""

from __future__ import annotations

import platform
import shutil
import sys

_NVIDIA_DRIVER = "/proc/driver/nvidia/version"
KAME_EXTRA_HINT = "pip install 'kame-desktop[kame]'"


def gpu_hint() -> str | None:
    """What GPU is here (e.g. "an NVIDIA GPU (driver 550.54)", "an Apple Silicon GPU (MPS)"),
    or None when there is none that KAME could use."""
    if sys.platform == "darwin" and platform.machine() == "arm64":
        return "an Apple Silicon GPU (MPS)"
    try:
        with open(_NVIDIA_DRIVER, encoding="utf-8") as f:
            words = f.readline().split()
        version = next((w for w in words if w[:1].isdigit() and "." in w), "")
        return f"an NVIDIA GPU (driver {version})" if version else "an NVIDIA GPU"
    except OSError:
        pass
    if shutil.which("nvidia-smi"):  # Windows, or a driver without /proc (WSL)
        return "an NVIDIA GPU (nvidia-smi)"
    return None


def kame_extra_missing() -> list[str]:
    """Which of the `kame` extra's packages are not installed (found without importing them)."""
    import importlib.util

    return [name for name in ("torch", "moshi") if importlib.util.find_spec(name) is None]


def require_kame(what: str = "the KAME front-end") -> None:
    """Before anything of the `kame` extra (moshi, torch) loads: one actionable line, not an
    ImportError, when it is missing."""
    missing = kame_extra_missing()
    if not missing:
        try:
            import moshi  # noqa: F401  (imports torch)
        except ImportError as e:  # installed but broken (a missing dependency of theirs)
            missing = [e.name or "moshi"]
    if missing:
        from kame_desktop.errors import NotInstalledError

        raise NotInstalledError(f"{what} needs {' and '.join(missing)}: {KAME_EXTRA_HINT} "
                                "(or choose the lite front-end and the Whisper recognizer)")


def main() -> int:
    """`python kame_desktop/models/accelerator.py`: the hint on stdout; exit 0 with a GPU, 1 without."""
    hint = gpu_hint()
    print(hint or "no NVIDIA or Apple Silicon GPU")
    return 0 if hint else 1


if __name__ == "__main__":
    sys.exit(main())
