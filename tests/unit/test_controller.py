"""The Controller on its own (no Qt): it builds the session through the assembly path, gates the
microphone with push-to-talk, reports failures as notices with their kind, and lets go of a
stopped session."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from fixtures.frontend import RecordingFrontEnd

from kame_desktop.audio.sources import NullSink
from kame_desktop.config import Settings
from kame_desktop.controller import Controller, ErrorNotice, SessionEnded, StatusNotice
from kame_desktop.errors import CheckpointError
from kame_desktop.events import FRAME_SIZE, SessionStartEvent, Stamped


class LoudSource:
    """A paced-by-nobody source of full-scale frames that ends after `frames` or on close()."""

    def __init__(self, frames: int = 10_000) -> None:
        self.frames = frames
        self.closed = threading.Event()

    def read(self) -> np.ndarray | None:
        if self.closed.is_set() or self.frames <= 0:
            return None
        self.frames -= 1
        time.sleep(0.005)  # let the test thread in between frames
        return np.ones(FRAME_SIZE, np.float32)

    def close(self) -> None:
        self.closed.set()


class Notices(list):
    def __call__(self, obj: object) -> None:
        self.append(obj)

    def of(self, cls):
        return [n for n in list(self) if isinstance(n, cls)]


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture
def controller():
    made = []

    def make(frontend_factory, **kwargs) -> tuple[Controller, Notices]:
        notices = Notices()
        c = Controller(
            Settings(),
            notices,
            frontend_factory=frontend_factory,
            audio_factory=lambda _s, _on_error, _on_recover: (LoudSource(), NullSink()),  # a fresh "device" per run
            backend_factory=lambda _s, _post, _publish: None,
            **kwargs,
        )
        made.append(c)
        return c, notices

    yield make
    for c in made:
        c.stop()


def test_push_to_talk_gates_what_the_front_end_hears(controller):
    fe = RecordingFrontEnd()
    c, notices = controller(lambda _s: fe)
    c.start()
    wait_for(lambda: len(fe.peaks) >= 5)
    assert max(fe.peaks) == 0.0, "key up: the front-end hears silence"
    c.set_ptt(True)
    wait_for(lambda: fe.peaks[-1] == 1.0)
    c.set_ptt(False)
    n = len(fe.peaks)
    wait_for(lambda: len(fe.peaks) >= n + 5)
    assert fe.peaks[-1] == 0.0
    c.stop()
    assert not c.running
    starts = [n.event for n in notices if isinstance(n, Stamped) and isinstance(n.event, SessionStartEvent)]
    assert [(e.frontend, e.model) for e in starts] == [("kame", "recorder")]
    assert fe.resets == 1, "the assembly path resets a front-end it is given"
    assert not fe.closed, "an injected front-end stays its owner's"


def test_a_load_failure_is_a_notice_with_its_kind(controller):
    def broken(_settings):
        raise CheckpointError("no checkpoint at /nowhere; pick another in Settings")

    c, notices = controller(broken)
    c.start()
    wait_for(lambda: notices.of(ErrorNotice))
    (error,) = notices.of(ErrorNotice)
    assert (error.source, error.kind) == ("load", "bad_model") and "/nowhere" in error.message
    wait_for(lambda: any(n.text == "Not running" for n in notices.of(StatusNotice)))


def test_stopped_sessions_are_dropped_and_a_restart_builds_a_new_one(controller):
    built: list[RecordingFrontEnd] = []

    def factory(_settings):
        built.append(RecordingFrontEnd())
        return built[-1]

    c, notices = controller(factory)
    c.start()
    wait_for(lambda: c.session is not None)
    first = c.session
    c.restart(Settings())
    wait_for(lambda: c.session is not None and c.session is not first)
    assert len(built) == 2
    c.stop()
    wait_for(lambda: len(notices.of(SessionEnded)) == 2)
    assert c.session is None, "a stopped session is not kept (its models can be freed)"
