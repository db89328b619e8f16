"""The app's place on the desktop: its icon and .desktop file (assets/, shipped inside the
package by the wheel and the bundle), and `kame-desktop install-desktop-entry`, which puts
them where Linux launchers look (XDG: ~/.local/share/applications and the hicolor icon theme)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from kame_desktop.errors import KameError, OutputError
from kame_desktop.fileio import atomic_write_bytes

APP_ID = "kame-desktop"


def assets_dir() -> Path:
    """assets/: inside the package (wheel, bundle), else the source tree's."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "assets", here.parent / "assets"):
        if (candidate / f"{APP_ID}.desktop").is_file():
            return candidate
    raise KameError("the app's assets (icon, .desktop file) are missing; reinstall kame-desktop")


def launch_command() -> list[str]:
    """How to start this very installation's app: the bundle's executable, the venv's console
    script, or this interpreter with `-m`."""
    if getattr(sys, "frozen", False):
        return [sys.executable, "gui"]
    script = Path(sys.executable).with_name(APP_ID)
    if script.is_file():
        return [str(script), "gui"]
    return [sys.executable, "-m", "kame_desktop", "gui"]


def desktop_entry_text(command: list[str]) -> str:
    """assets/kame-desktop.desktop with Exec pointing at `command` (a launcher has no venv on PATH)."""
    exec_line = "Exec=" + " ".join(shlex.quote(part) for part in command)
    lines = (assets_dir() / f"{APP_ID}.desktop").read_text(encoding="utf-8").splitlines()
    return "\n".join(exec_line if line.startswith("Exec=") else line for line in lines) + "\n"


def install_desktop_entry(data_home: Path | None = None) -> list[Path]:
    """Write the .desktop file and the icons under `data_home` (default $XDG_DATA_HOME or
    ~/.local/share); returns what was written."""
    if not sys.platform.startswith("linux"):
        raise KameError("install-desktop-entry is for Linux desktops; on macOS use the .app bundle, on Windows "
                        "a shortcut to the bundle's kame-desktop.exe (see packaging/README.md)", kind="bad_input")
    home = data_home or Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    assets = assets_dir()
    targets = {
        home / "applications" / f"{APP_ID}.desktop": desktop_entry_text(launch_command()).encode(),
        home / "icons" / "hicolor" / "256x256" / "apps" / f"{APP_ID}.png": (assets / f"{APP_ID}.png").read_bytes(),
        home / "icons" / "hicolor" / "scalable" / "apps" / f"{APP_ID}.svg": (assets / f"{APP_ID}.svg").read_bytes(),
    }
    try:
        for path, data in targets.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, data)
    except OSError as e:
        raise OutputError(f"could not write the desktop entry ({e.strerror or e}) under {home}") from None
    if shutil.which("update-desktop-database"):  # some launchers only rescan when told
        subprocess.run(["update-desktop-database", str(home / "applications")], capture_output=True, check=False)
    return list(targets)
