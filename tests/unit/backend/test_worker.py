"""The back-end's turn path: the end of the turn reaches the front-end while the recognizer is
still busy, and the words of the turn are committed after it."""

from __future__ import annotations

import threading

import numpy as np

from kame_desktop.backend.llm.base import UnavailableLlm
from kame_desktop.backend.oracle_manager import PolicyConfig
from kame_desktop.backend.turn import TurnDetector
from kame_desktop.backend.worker import Backend
from kame_desktop.events import FRAME_SIZE, SAMPLE_RATE, AsrFinalEvent, TurnEnded, TurnEndEvent


class HeldAsr:
    """The real recognizer, held at its first call until `release` is set: a pass that takes as
    long as the test likes."""

    def __init__(self, asr) -> None:
        self._asr = asr
        self.release = threading.Event()

    def __getattr__(self, name):
        return getattr(self._asr, name)

    def feed(self, pcm, t_end):
        self.release.wait(60)
        return self._asr.feed(pcm, t_end)


def test_the_turn_ends_without_waiting_for_recognition(whisper_asr, piper_voice):
    pcm = np.concatenate([np.zeros(SAMPLE_RATE // 2, np.float32), piper_voice.synthesize("How many people live in London?"),
                          np.zeros(2 * SAMPLE_RATE, np.float32)])
    whisper_asr.reset()
    asr = HeldAsr(whisper_asr)
    signals, events = [], []
    turn_ended = threading.Event()

    def post(signal) -> bool:
        signals.append(signal)
        if isinstance(signal, TurnEnded):
            turn_ended.set()
        return True

    backend = Backend(UnavailableLlm("none", "no LLM in this test"), asr, post, events.append,
                      turns=TurnDetector("smart"), policy=PolicyConfig(name="reactive"))
    backend.start()
    try:
        for i in range(0, len(pcm), FRAME_SIZE):
            backend.push_audio(pcm[i : i + FRAME_SIZE], (i + FRAME_SIZE) / SAMPLE_RATE)
        assert turn_ended.wait(60), "the turn ended while the recognizer was still held"
        assert not [e for e in events if isinstance(e, AsrFinalEvent)]
        (turn_end,) = [e for e in events if isinstance(e, TurnEndEvent)]
        assert turn_end.turn_detection == "smart" and turn_end.probability >= 0.5
        asr.release.set()
    finally:
        asr.release.set()
        backend.stop()
    words = " ".join(e.text for e in events if isinstance(e, AsrFinalEvent)).lower()
    assert "london" in words  # committed after the turn end, not lost
    assert [e for e in events if isinstance(e, TurnEndEvent)] == [turn_end]  # the recognizer's own VAD is not a second turn
