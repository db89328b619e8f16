"""One app per user (and config folder): the first launch listens on a QLocalServer; a second
launch connects, asks it to raise its window, and exits. `claim` does both under a lock file,
so two launches at the same moment cannot both find no one listening and both go on."""

from __future__ import annotations

import getpass
import hashlib
import logging
import tempfile
from pathlib import Path

from PySide6.QtCore import QLockFile, QObject, Signal
from PySide6.QtNetwork import QLocalServer, QLocalSocket

from kame_desktop.config import config_dir

log = logging.getLogger(__name__)

RAISE = b"raise\n"
LOCK_WAIT_MS = 10_000  # another launch holds the lock only between its hand-over and its listen()


def server_name() -> str:
    folder = hashlib.sha1(str(config_dir()).encode()).hexdigest()[:10]
    return f"kame-desktop-{getpass.getuser()}-{folder}"


def hand_over(name: str | None = None, timeout_ms: int = 500) -> bool:
    """Ask a running instance to raise its window; False when none answers."""
    socket = QLocalSocket()
    socket.connectToServer(name or server_name())
    if not socket.waitForConnected(timeout_ms):
        return False
    socket.write(RAISE)
    socket.waitForBytesWritten(timeout_ms)
    socket.disconnectFromServer()
    return True


def claim(name: str | None = None) -> SingleInstance | None:
    """Under a lock shared by every launch for this user and config folder: hand over to a
    running instance (None: this launch should exit), or listen as the first (returned)."""
    name = name or server_name()
    lock = QLockFile(str(Path(tempfile.gettempdir()) / f"{name}.lock"))  # a dead holder's lock is stale
    locked = lock.tryLock(LOCK_WAIT_MS)
    if not locked:  # a launch stuck while holding it: go on unlocked rather than not start
        log.warning("could not take the single-instance lock %s (error %s)", lock.fileName(), lock.error())
    try:
        if hand_over(name):
            return None
        instance = SingleInstance(name)
        instance.listen()
        return instance
    finally:
        if locked:
            lock.unlock()


class SingleInstance(QObject):
    raise_requested = Signal()

    def __init__(self, name: str | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.name = name or server_name()
        self.server = QLocalServer(self)
        self.server.newConnection.connect(self._on_connection)

    def listen(self) -> bool:
        if not self.server.listen(self.name):
            QLocalServer.removeServer(self.name)  # a stale socket left by a crash
            return self.server.listen(self.name)
        return True

    def _on_connection(self) -> None:
        while (socket := self.server.nextPendingConnection()) is not None:
            socket.readyRead.connect(lambda s=socket: self._on_read(s))
            socket.disconnected.connect(socket.deleteLater)
            if socket.bytesAvailable():
                self._on_read(socket)

    def _on_read(self, socket: QLocalSocket) -> None:
        if bytes(socket.readAll().data()).startswith(RAISE.strip()):
            self.raise_requested.emit()

    def close(self) -> None:
        self.server.close()
