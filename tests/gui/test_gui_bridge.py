"""The bridge carries the session's objects from any thread to the window, and doing so many
times must not corrupt the interpreter: PySide6 6.12.0's Signal.emit() dropped a reference to True
on every call, and after a few minutes of a session the app aborted at exit ("bool_dealloc")."""

from __future__ import annotations

import sys
import threading

import pytest

from kame_desktop.controller import FrameStats

pytestmark = pytest.mark.gui


def test_many_deliveries_from_a_thread_arrive_in_order_and_leave_refcounts_alone(qtbot):
    from kame_desktop.gui.bridge import EventBridge

    bridge = EventBridge()
    got: list[object] = []
    bridge.received.connect(got.append)
    sent = [FrameStats(float(n), 0.0, 0.1, 0.2) for n in range(2000)]  # ~3 minutes of frames
    true_refs, false_refs = sys.getrefcount(True), sys.getrefcount(False)

    thread = threading.Thread(target=lambda: [bridge(s) for s in sent])
    thread.start()
    thread.join()
    qtbot.waitUntil(lambda: len(got) == len(sent), timeout=10000)

    assert got == sent
    # Our code keeps no booleans alive here, so the counts move by a handful at most; the defect
    # took one reference per delivery (2000).
    assert abs(sys.getrefcount(True) - true_refs) < 100, sys.getrefcount(True) - true_refs
    assert abs(sys.getrefcount(False) - false_refs) < 100
