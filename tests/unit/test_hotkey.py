"""Whether the global talk key can work here (doctor's `global-key` line): X11 with RECORD,
Wayland with or without the GlobalShortcuts portal, macOS's accessibility permission."""

from __future__ import annotations

import pytest

from kame_desktop import doctor, hotkey


def test_x11_with_record_works(xvfb, monkeypatch):
    monkeypatch.setenv("DISPLAY", xvfb)
    for name in ("WAYLAND_DISPLAY", "XDG_SESSION_TYPE"):
        monkeypatch.delenv(name, raising=False)
    support = hotkey.global_key_support(platform="linux")
    assert support.backend == "pynput" and "X11" in support.detail
    check = doctor.check_global_key()
    assert check.status == "ok" and check.detail.startswith("X11")


def test_an_x_server_that_cannot_be_opened_says_so(monkeypatch):
    support = hotkey.global_key_support({"DISPLAY": ":999"}, platform="linux")
    assert support.backend == "none" and ":999" in support.detail and "only in the window" in support.detail


def test_wayland_without_the_portal_says_why_in_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", f"unix:path={tmp_path}/no-bus")
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")
    support = hotkey.global_key_support(platform="linux")
    assert support.backend == "none" and "\n" not in support.detail
    assert support.detail.startswith("Wayland without the GlobalShortcuts portal") and "only in the window" in support.detail
    assert "GlobalShortcuts" in support.fix
    check = doctor.check_global_key()
    assert check.status == "warn" and check.detail == support.detail


def test_headless_is_not_a_warning(monkeypatch):
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "XDG_SESSION_TYPE"):
        monkeypatch.delenv(name, raising=False)
    if not hotkey.sys.platform.startswith("linux"):
        pytest.skip("DISPLAY is Linux's")
    check = doctor.check_global_key()
    assert check.status == "ok" and "no display session" in check.detail


def test_macos_without_the_accessibility_permission(monkeypatch):
    monkeypatch.setattr(hotkey, "mac_accessibility_granted", lambda: False)
    support = hotkey.global_key_support({}, platform="darwin")
    assert support.backend == "none" and "accessibility permission" in support.detail
    assert support.tell and "Accessibility" in support.fix  # the banner says so
    monkeypatch.setattr(hotkey, "mac_accessibility_granted", lambda: True)
    assert hotkey.global_key_support({}, platform="darwin").backend == "pynput"


@pytest.mark.parametrize("name", ["Space", "F9", "Pause", "A", "7"])
def test_keys_that_can_be_global(name):
    assert hotkey.key_problem(name) is None


@pytest.mark.parametrize("name", ["Ctrl+A", "Media Play", "", "F30"])
def test_keys_that_cannot_be_global_say_so(name):
    problem = hotkey.key_problem(name)
    assert problem and "cannot be a global talk key" in problem
