"""The back-end's turn path: the end of the turn reaches the front-end while the recognizer is
still busy, and the words of the turn are committed after it."""

from __future__ import annotations

import math
import threading
import time

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


def started_backend(asr, post, publish) -> Backend:
    """A back-end with Smart Turn, the reactive policy and no LLM, started."""
    backend = Backend(UnavailableLlm("none", "no LLM in this test"), asr, post, publish,
                      turns=TurnDetector("smart"), policy=PolicyConfig(name="reactive"))
    backend.start()
    return backend


def push(backend: Backend, pcm: np.ndarray, start_s: float = 0.0) -> None:
    """`pcm` to the back-end in 80 ms frames, on the session clock from `start_s`."""
    for i in range(0, len(pcm), FRAME_SIZE):
        backend.push_audio(pcm[i : i + FRAME_SIZE], start_s + (i + FRAME_SIZE) / SAMPLE_RATE)


def run_held(whisper_asr, piper_voice, heard_until: float):
    """One question through the back-end while the recognizer is held; returns (signals and
    events seen while it was held, all signals, all events)."""
    pcm = np.concatenate([np.zeros(SAMPLE_RATE // 2, np.float32), piper_voice.synthesize("What is the capital of France?"),
                          np.zeros(2 * SAMPLE_RATE, np.float32)])
    whisper_asr.reset()
    asr = HeldAsr(whisper_asr)
    asr.heard_until = heard_until  # what the recognizer claims to have decoded
    signals, events = [], []
    decided, told = threading.Event(), threading.Event()

    def post(signal) -> bool:
        signals.append(signal)
        if isinstance(signal, TurnEnded):
            told.set()
        return True

    def publish(event) -> None:
        events.append(event)
        if isinstance(event, TurnEndEvent):
            decided.set()

    backend = started_backend(asr, post, publish)
    try:
        push(backend, pcm)
        assert decided.wait(60), "the turn ended while the recognizer was still held"
        backend._to_loop(asr.release.set)  # after what the loop had to do with the turn end
        asr.release.wait(60)
        held = (list(signals), list(events))
        assert told.wait(60), "the front-end was told the turn ended"
    finally:
        asr.release.set()
        backend.stop()
    return held, signals, events


def test_the_turn_ends_without_waiting_for_recognition(whisper_asr, piper_voice):
    (held_signals, held_events), signals, events = run_held(whisper_asr, piper_voice, heard_until=-math.inf)
    (turn_end,) = [e for e in held_events if isinstance(e, TurnEndEvent)]
    assert turn_end.turn_detection == "smart" and turn_end.probability >= 0.5
    assert not [e for e in held_events if isinstance(e, AsrFinalEvent)]
    # The recognizer had not heard the end of the speech: the front-end is told after the words.
    assert not [s for s in held_signals if isinstance(s, TurnEnded)]
    words = " ".join(e.text for e in events if isinstance(e, AsrFinalEvent)).lower()
    assert "france" in words  # committed after the turn end, not lost
    assert [type(s) for s in signals if isinstance(s, TurnEnded)] == [TurnEnded]
    assert [e for e in events if isinstance(e, TurnEndEvent)] == [turn_end]  # the recognizer's own VAD is not a second turn


def test_a_recognizer_that_heard_it_all_lets_the_reply_start_at_once(whisper_asr, piper_voice):
    (held_signals, _), signals, _ = run_held(whisper_asr, piper_voice, heard_until=math.inf)
    assert [type(s) for s in held_signals if isinstance(s, TurnEnded)] == [TurnEnded]
    assert len([s for s in signals if isinstance(s, TurnEnded)]) == 1


def test_talking_again_reopens_a_turn_not_yet_announced(whisper_asr, piper_voice):
    """The detector ends the turn in a pause, the user goes on before the recognizer has the
    words: the front-end is told of one turn, after the last words, never of the first half."""
    from kame_desktop.events import SpeechStartEvent, UserSpeechStarted

    def say(text: str, pause_s: float) -> list[np.ndarray]:
        return [piper_voice.synthesize(text), np.zeros(round(pause_s * SAMPLE_RATE), np.float32)]

    first = np.concatenate([np.zeros(SAMPLE_RATE // 2, np.float32), *say("What is the capital of France?", 0.5)])
    second = np.concatenate(say("And what about Spain?", 2.0))
    whisper_asr.reset()
    asr = HeldAsr(whisper_asr)
    asr.heard_until = -math.inf  # the recognizer never has the words when the turn ends
    signals, events, both = [], [], []  # both: signals and events in the order they went out
    decided, spoke_again, told = threading.Event(), threading.Event(), threading.Event()

    def post(signal) -> bool:
        signals.append(signal)
        both.append(signal)
        if isinstance(signal, TurnEnded) and spoke_again.is_set():
            told.set()
        return True

    def publish(event) -> None:
        events.append(event)
        both.append(event)
        if isinstance(event, TurnEndEvent):
            decided.set()
        if isinstance(event, SpeechStartEvent) and sum(isinstance(e, SpeechStartEvent) for e in events) == 2:
            spoke_again.set()

    backend = started_backend(asr, post, publish)
    try:
        # The second half reaches the recognizer after the first turn end, as it would live.
        push(backend, first)
        assert decided.wait(60), "the detector ended the turn in the pause"
        time.sleep(0.5)  # the turn thread queues that turn end for the recognizer just after announcing it
        push(backend, second, len(first) / SAMPLE_RATE)
        assert spoke_again.wait(60), "the turn detector heard two stretches of speech"
        backend._to_loop(asr.release.set)
        assert told.wait(60), "the front-end was told the reopened turn ended"
    finally:
        asr.release.set()
        backend.stop()
    ended = [e for e in events if isinstance(e, TurnEndEvent)]
    assert len(ended) == 2 and ended[0].probability >= 0.5  # the detector did end the first half
    kinds = [type(s) for s in signals if isinstance(s, TurnEnded | UserSpeechStarted)]
    assert kinds == [UserSpeechStarted, UserSpeechStarted, TurnEnded], kinds
    told_at = next(i for i, x in enumerate(both) if isinstance(x, TurnEnded))
    heard = " ".join(x.text for x in both[:told_at] if isinstance(x, AsrFinalEvent)).lower()
    assert "spain" in heard, heard  # told once the second half's words were in
