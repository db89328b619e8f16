"""install-desktop-entry: a .desktop file whose Exec starts this installation (a launcher has no
venv on PATH) and the icons, where XDG launchers look."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kame_desktop.desktop import install_desktop_entry, launch_command

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux desktops only")


def test_the_entry_and_icons_land_in_the_xdg_folders(tmp_path):
    written = install_desktop_entry(tmp_path)
    entry = tmp_path / "applications" / "kame-desktop.desktop"
    assert entry in written
    assert (tmp_path / "icons/hicolor/256x256/apps/kame-desktop.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "icons/hicolor/scalable/apps/kame-desktop.svg").stat().st_size > 0
    lines = entry.read_text().splitlines()
    [exec_line] = [line for line in lines if line.startswith("Exec=")]
    command = shlex.split(exec_line.removeprefix("Exec="))
    assert command == launch_command() and command[-1] == "gui"
    assert "Icon=kame-desktop" in lines and "Type=Application" in lines
    if shutil.which("desktop-file-validate"):
        assert subprocess.run(["desktop-file-validate", str(entry)], capture_output=True).returncode == 0


def test_the_command_it_writes_is_this_installations():
    """The venv's console script beside this interpreter (or the interpreter itself with -m)."""
    command = launch_command()
    assert Path(command[0]).parent == Path(sys.executable).parent
    assert os.access(command[0], os.X_OK)
