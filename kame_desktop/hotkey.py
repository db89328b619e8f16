"""The global talk key: the push-to-talk key heard while another application has focus.

X11, macOS and Windows through `pynput` (a passive listener: the key still reaches the focused
application); Wayland through the XDG desktop portal's GlobalShortcuts interface where the
desktop offers it (`portal_key.py`). `global_key_support()` says which one can work here, and
why not where none can (doctor and the settings dialog show it). No Qt here: the GUI wraps a
listener in a Qt signal.

Privacy: a listener sees every key the user types. Only "is this the talk key?" is ever asked
of a key; no other key is kept, compared further, or logged.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

log = logging.getLogger(__name__)

Backend = Literal["pynput", "portal", "none"]
START_TIMEOUT_S = 5.0
INSTALL_HINT = "pip install --no-deps pynput && pip install python-xlib (scripts/setup does both)"
MAC_PERMISSION_FIX = ("System Settings → Privacy & Security → Accessibility: allow kame-desktop (or the terminal "
                      "that starts it), then start it again")

# Qt's portable key names (QKeySequence.toString(), as settings store them) -> pynput's Key names.
NAMED_KEYS: dict[str, str] = {
    "Space": "space", "Pause": "pause", "ScrollLock": "scroll_lock", "Ins": "insert", "Del": "delete",
    "Home": "home", "End": "end", "PgUp": "page_up", "PgDown": "page_down", "Menu": "menu",
    "CapsLock": "caps_lock", "NumLock": "num_lock", "Print": "print_screen", "Backspace": "backspace",
    "Return": "enter", "Enter": "enter", "Left": "left", "Right": "right", "Up": "up", "Down": "down",
    **{f"F{n}": f"f{n}" for n in range(1, 21)},
}


@dataclass(frozen=True)
class KeySupport:
    """Whether the talk key can work outside the window here: `backend` "none" says why not."""

    backend: Backend
    detail: str  # one line
    fix: str = ""
    tell: bool = False  # the user can fix it (macOS permission): the banner says so, not only the settings


def key_problem(name: str) -> str | None:
    """Why `name` (a Qt key name) cannot be the global talk key, or None."""
    if name in NAMED_KEYS or (len(name) == 1 and name.isprintable() and not name.isspace()):
        return None
    return (f"the key '{name}' cannot be a global talk key — pick a letter or digit, F1–F20, Space, Pause, "
            "Scroll Lock, Insert or another named key without Ctrl/Alt/Shift")


def _is_wayland(env: Mapping[str, str]) -> bool:
    return env.get("XDG_SESSION_TYPE", "").lower() == "wayland" or bool(env.get("WAYLAND_DISPLAY"))


def pynput_installed() -> bool:
    try:
        import pynput  # noqa: F401
    except Exception:  # ImportError, or its platform backend failing to load
        return False
    return True


def x11_record_problem(display: str) -> str | None:
    """Why the X server at `display` cannot report keys to a listener (None: it can)."""
    try:
        from Xlib import display as xdisplay
        from Xlib.error import DisplayError
    except ImportError:
        return "python-xlib is not installed"
    try:
        conn = xdisplay.Display(display)
    except (DisplayError, OSError, ValueError) as e:
        return f"cannot open the X display {display} ({type(e).__name__})"
    try:
        if not conn.has_extension("RECORD"):
            return f"the X server at {display} lacks the RECORD extension"
    finally:
        conn.close()
    return None


def mac_accessibility_granted() -> bool | None:
    """Whether macOS lets this process read the keyboard (None: cannot tell)."""
    import ctypes

    try:
        lib = ctypes.cdll.LoadLibrary("/System/Library/Frameworks/ApplicationServices.framework/ApplicationServices")
        lib.AXIsProcessTrusted.restype = ctypes.c_bool
        return bool(lib.AXIsProcessTrusted())
    except (OSError, AttributeError):
        return None


def global_key_support(env: Mapping[str, str] | None = None, platform: str | None = None) -> KeySupport:
    """Which listener can hear the talk key while another application has focus, here."""
    env = os.environ if env is None else env
    platform = platform or sys.platform
    if platform.startswith("linux") or "bsd" in platform:
        if _is_wayland(env):
            from kame_desktop.portal_key import portal_version

            version, why = portal_version()
            if version:
                return KeySupport("portal", f"Wayland: the desktop portal's GlobalShortcuts (version {version})")
            return KeySupport("none", f"Wayland without the GlobalShortcuts portal ({why}): the talk key works only in the window",
                              "use a desktop whose portal offers GlobalShortcuts (KDE Plasma 5.27+, GNOME 48+), or an X11 session")
        display = env.get("DISPLAY", "")
        if not display:
            return KeySupport("none", "no display session (DISPLAY is not set): no global talk key",
                              "start the app from a desktop session")
        if not pynput_installed():
            return KeySupport("none", "pynput is not installed: the talk key works only in the window", INSTALL_HINT)
        if problem := x11_record_problem(display):
            return KeySupport("none", f"X11: {problem}: the talk key works only in the window",
                              "enable the X server's RECORD extension" if "RECORD" in problem else INSTALL_HINT)
        return KeySupport("pynput", f"X11 ({display}): pynput hears the talk key in every application")
    if not pynput_installed():
        return KeySupport("none", "pynput is not installed: the talk key works only in the window", "pip install pynput")
    if platform == "darwin":
        if mac_accessibility_granted() is False:
            return KeySupport("none", "macOS has not given kame-desktop the accessibility permission: the talk key "
                              "works only in the window", MAC_PERMISSION_FIX, tell=True)
        return KeySupport("pynput", "macOS: pynput hears the talk key in every application")
    return KeySupport("pynput", "Windows: pynput hears the talk key in every application")


class TalkKeyListener(Protocol):
    def start(self) -> str | None: ...  # None: listening; else why not (one line)
    def stop(self) -> None: ...


class PynputTalkKey:
    """A pynput keyboard listener that reports only the talk key's press and release (`on_change`
    with True/False, from the listener's thread; auto-repeat folded into one press)."""

    def __init__(self, key_name: str, on_change: Callable[[bool], None]) -> None:
        self.key_name = key_name
        self._on_change = on_change
        self._listener: Any = None
        self._down = False

    def start(self) -> str | None:
        if problem := key_problem(self.key_name):
            return problem
        try:
            from pynput import keyboard
        except Exception as e:
            return f"pynput cannot load ({type(e).__name__}): {INSTALL_HINT}"
        named = NAMED_KEYS.get(self.key_name)
        target = getattr(keyboard.Key, named, None) if named else None
        if named and target is None:
            return f"the key '{self.key_name}' has no global equivalent on this system — pick another"
        char = None if named else self.key_name.lower()

        def is_talk_key(key: Any) -> bool:  # the only question ever asked of a key
            if target is not None:
                return key == target
            return getattr(key, "char", None) is not None and key.char.lower() == char

        def change(key: Any, down: bool) -> None:
            try:
                if is_talk_key(key) and down != self._down:
                    self._down = down
                    self._on_change(down)
            except Exception:  # never let pynput log it: its traceback would name the key
                self._down = False

        listener = keyboard.Listener(on_press=lambda k: change(k, True), on_release=lambda k: change(k, False))
        ready = threading.Event()
        listener.start()
        threading.Thread(target=lambda: (listener.wait(), ready.set()), daemon=True, name="talk-key-wait").start()
        if not ready.wait(START_TIMEOUT_S) or not listener.is_alive():
            listener.stop()
            return "the key listener did not start (the display refused it)"
        self._listener = listener
        log.info("global talk key %s: listening (pynput)", self.key_name)
        return None

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.stop()
            self._listener = None
        if self._down:
            self._down = False
            self._on_change(False)


def make_listener(support: KeySupport, key_name: str, on_change: Callable[[bool], None]) -> TalkKeyListener | None:
    if support.backend == "pynput":
        return PynputTalkKey(key_name, on_change)
    if support.backend == "portal":
        from kame_desktop.portal_key import PortalTalkKey

        return PortalTalkKey(key_name, on_change)
    return None
