"""Wake-word mode through the real session (the Controller with the lite front-end, streaming
Whisper, llama.cpp in process, Piper), paced at real time: a question after the wake word is
answered and the companion waits again; the same question without it is never heard; a wake-word
model that cannot load is one banner line and push-to-talk."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from kame_desktop.audio import wake_word
from kame_desktop.audio.sources import FileSource
from kame_desktop.config import AudioSettings, FrontEndSettings, Settings
from kame_desktop.controller import Controller, ErrorNotice, SessionEnded
from kame_desktop.events import FRAME_SIZE, SAMPLE_RATE, Stamped
from kame_desktop.frontend.base import FrameResult
from kame_desktop.listening import ListeningNotice

QUESTION = "What is the capital of France?"


class Collect:
    def __init__(self) -> None:
        self.frames: list[np.ndarray] = []

    def write(self, frame: np.ndarray) -> None:
        self.frames.append(frame)

    def close(self) -> None:
        pass


class Until:
    """A source that ends early once `done` is set (the gate waits again): a slower machine
    gets as long as it needs, up to the source's own end."""

    def __init__(self, inner: FileSource, done: threading.Event) -> None:
        self.inner, self.done = inner, done

    def read(self) -> np.ndarray | None:
        return None if self.done.is_set() else self.inner.read()


def run(pcm: np.ndarray, tail_s: float, listening: str = "wake_word", **parts) -> tuple[list, np.ndarray]:
    notices: list = []
    waiting_again = threading.Event()

    def notify(obj: object) -> None:
        notices.append(obj)
        states = [n.state for n in notices if isinstance(n, ListeningNotice)]
        if "listening" in states and states[-1] == "waiting":
            waiting_again.set()

    sink = Collect()
    settings = Settings(frontend=FrontEndSettings(kind="lite"), audio=AudioSettings(listening=listening))
    c = Controller(settings, notify,
                   audio_factory=lambda _s, _e, _r: (Until(FileSource(pcm, tail_s, realtime=True), waiting_again), sink),
                   **parts)
    c.start()
    deadline = time.monotonic() + len(pcm) / SAMPLE_RATE + tail_s + 120
    while not any(isinstance(n, SessionEnded) for n in notices):
        assert time.monotonic() < deadline, "the session did not end"
        time.sleep(0.1)
    c.stop()
    return notices, np.concatenate(sink.frames) if sink.frames else np.zeros(0, np.float32)


class SilentFrontEnd:
    kind, model, device = "lite", "silent", "cpu"

    def step(self, frame, signals) -> FrameResult:
        return FrameResult(np.zeros(FRAME_SIZE, np.float32))

    def reset(self) -> None:
        pass

    def close(self) -> None:
        pass


def events(notices: list, kind: str) -> list:
    return [n.event for n in notices if isinstance(n, Stamped) and n.event.kind == kind]


@pytest.fixture(scope="module")
def lead():
    return np.zeros(SAMPLE_RATE, np.float32)


def test_a_question_after_the_wake_word_is_answered_then_it_waits_again(piper_voice, lead):
    said = np.concatenate([lead, piper_voice.synthesize("Alexa, " + QUESTION[0].lower() + QUESTION[1:]), lead])
    notices, out = run(said, tail_s=60.0)  # ends when it waits again
    states = [n.state for n in notices if isinstance(n, ListeningNotice)]
    assert states[0] == "waiting" and "listening" in states
    assert states[states.index("listening") :].count("waiting") >= 1, f"it waits again after the answer: {states}"
    heard = " ".join(e.text for e in events(notices, "asr_final")).lower()
    assert "capital of france" in heard and "alexa" not in heard, heard
    answer = "".join(e.piece for e in events(notices, "assistant_token"))
    assert answer.strip(), "the question is answered"
    assert events(notices, "speech_end") and np.abs(out).max() > 0.05, "and the answer is spoken"
    assert not [n for n in notices if isinstance(n, ErrorNotice)]


def test_without_the_wake_word_nothing_is_heard_or_answered(piper_voice, lead):
    said = np.concatenate([lead, piper_voice.synthesize(QUESTION), lead])
    notices, _out = run(said, tail_s=4.0)
    assert [n.state for n in notices if isinstance(n, ListeningNotice)] == ["waiting"]
    assert not events(notices, "speech_start") and not events(notices, "asr_final")
    assert not events(notices, "assistant_token")


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_a_wake_word_model_that_cannot_load_is_one_banner_line_and_push_to_talk(damage, monkeypatch, tmp_path, lead):
    if damage == "corrupt":
        (tmp_path / "featurizers" / "wakehubert-tiny").mkdir(parents=True)
        (tmp_path / "models").mkdir()
        (tmp_path / wake_word.FEATURIZER).write_bytes(b"\0" * 1000)
        (tmp_path / "models" / "alexa.onnx").write_bytes(b"\0" * 1000)
    monkeypatch.setattr(wake_word, "package_dir", lambda: tmp_path)
    # the fallback happens before the first frame: a silent front-end and no back-end do
    notices, _out = run(lead, tail_s=0.5, frontend_factory=lambda _s: SilentFrontEnd(),
                        backend_factory=lambda _s, _post, _publish: None)
    errors = [n for n in notices if isinstance(n, ErrorNotice)]
    assert len(errors) == 1 and errors[0].source == "wake_word" and errors[0].kind == "bad_model"
    assert "\n" not in errors[0].message and "push-to-talk" in errors[0].message
    assert ("missing" if damage == "missing" else "cannot load") in errors[0].message
    assert [n.mode for n in notices if isinstance(n, ListeningNotice)] == ["push_to_talk"]
