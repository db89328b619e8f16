"""Ending the app cleanly from outside: SIGTERM (a logout, a shutdown, `kill`), SIGINT (Ctrl+C)
and SIGHUP quit the event loop on the GUI thread, and the window then stops the session and
writes the rest of the conversation (`MainWindow.shutdown`, on `aboutToQuit`); a desktop session
that is about to end asks the app to save first (`commitDataRequest`).

Python runs a signal handler only when the interpreter gets control, which Qt's event loop in C++
does not give it: the handler's wake-up byte goes to a socket that a QSocketNotifier watches."""

from __future__ import annotations

import signal
import socket

from PySide6.QtCore import QObject, QSocketNotifier
from PySide6.QtWidgets import QApplication

QUIT_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class _SignalWaker(QObject):
    def __init__(self, app: QApplication) -> None:
        super().__init__(app)
        self._read, self._write = socket.socketpair()
        self._read.setblocking(False)
        self._write.setblocking(False)
        signal.set_wakeup_fd(self._write.fileno())
        for sig in QUIT_SIGNALS:
            signal.signal(sig, lambda *_: None)  # the wake-up byte does the work, on the GUI thread
        self._notifier = QSocketNotifier(self._read.fileno(), QSocketNotifier.Type.Read, self)
        self._notifier.activated.connect(self._woken)
        self._app = app

    def _woken(self) -> None:
        try:
            data = self._read.recv(64)
        except BlockingIOError:
            return
        if any(byte in data for byte in (int(s) for s in QUIT_SIGNALS)):
            self._app.quit()


def end_cleanly(app: QApplication, window) -> None:
    """Signals quit `app`; quitting, however it comes, lets `window` save and stop first."""
    app._signal_waker = _SignalWaker(app)  # kept alive by the application
    app.aboutToQuit.connect(window.shutdown)
    app.commitDataRequest.connect(lambda _manager: window.save_now())
