"""The talk key while another application has focus, as a Qt signal (hotkey.py does the
listening on its own thread; `changed` reaches the GUI thread queued)."""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QGuiApplication

from kame_desktop.hotkey import TalkKeyListener, global_key_support, make_listener


def on_a_desktop() -> bool:
    """A real screen (not Qt's offscreen or minimal platform): a global key means something."""
    return QGuiApplication.platformName() not in ("offscreen", "minimal")


class GlobalTalkKey(QObject):
    changed = Signal(bool)  # True: the talk key went down (in any application), False: up

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._listener: TalkKeyListener | None = None
        self.problem: str | None = None  # why the key works only in the window (None: it works, or is off)

    @property
    def active(self) -> bool:
        return self._listener is not None

    def configure(self, enabled: bool, key_name: str) -> str | None:
        """(Re)start listening for `key_name`, or stop. Returns what the banner should say (one
        line), if anything; `problem` keeps why the key works only in the window."""
        self.stop()
        self.problem = None
        if not enabled:
            return None
        support = global_key_support()
        listener = make_listener(support, key_name, self.changed.emit)
        if listener is None:  # this desktop cannot: the settings say why in one line
            self.problem = support.detail + (f" — {support.fix}" if support.fix else "")
            return self.problem if support.tell else None
        self.problem = listener.start()  # a key that cannot be had: the banner says so
        if self.problem is None:
            self._listener = listener
        return self.problem

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.stop()
            self._listener = None
