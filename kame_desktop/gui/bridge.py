"""The one Qt bridge: any thread calls it with an object (a `Stamped` event or a controller
notice); it re-emits that object as a Qt signal, which the window receives through a queued
connection on the GUI thread.

Give it no Qt parent: whoever calls it from a thread keeps it alive, and Qt drops the queued
deliveries to a receiver that has been destroyed meanwhile."""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal


class EventBridge(QObject):
    received = Signal(object)

    def __call__(self, obj: object) -> None:
        self.received.emit(obj)
