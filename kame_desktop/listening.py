"""The wake-word listening mode: a gate between the microphone and the session.

While it waits, each 80 ms frame goes to the wake-word detector only; the session (front-end,
VAD, ASR) gets silence, as with push-to-talk released, so nothing the room says reaches a model
that could send it anywhere. When the wake word is heard the gate opens for one turn: a short
chime, then the microphone is heard from the next frame on (the words after the wake word are
the question; the frame that completed the wake word is not passed). It stays open while the
answer is spoken, so the user can still talk over it, and closes (waits again) when:
  * nobody speaks within `LISTEN_TIMEOUT_S` of the wake word;
  * the turn is over and the answer has been spoken: the front-end's `speech_end` (lite), or, for
    a front-end that reports none (KAME), `QUIET_AFTER_ANSWER_S` of silence in the output after
    some sound;
  * nothing is said back within `ANSWER_TIMEOUT_S` of the end of the turn.
A user who starts talking again (barge-in) keeps it open for that turn too.

Events arrive on the back-end's threads, frames on the inference thread: the few flags they
share are set under one lock.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Literal

import numpy as np

from kame_desktop.events import (
    FRAME_SECONDS,
    SAMPLE_RATE,
    Event,
    SpeechEndEvent,
    SpeechStartEvent,
    TurnEndEvent,
)

LISTEN_TIMEOUT_S = 6.0
ANSWER_TIMEOUT_S = 15.0
QUIET_AFTER_ANSWER_S = 1.5
LOUD = 0.02  # the controller's output level (RMS × 4) above which the companion is making sound

GateState = Literal["waiting", "listening"]


@dataclass(frozen=True)
class ListeningNotice:
    """The listening mode in force ("push_to_talk", "open_mic", "wake_word") and, in wake-word
    mode, whether it waits for the word or listens for a turn."""

    mode: str
    state: GateState | None = None
    wake_word: str | None = None


def chime(rate: int = SAMPLE_RATE) -> np.ndarray:
    """Two short rising tones (130 ms, quiet): "I am listening"."""
    parts = []
    for freq in (880.0, 1320.0):
        t = np.arange(round(0.065 * rate)) / rate
        parts.append(0.15 * np.sin(2 * np.pi * freq * t) * np.hanning(len(t)))
    return np.concatenate(parts).astype(np.float32)


class WakeGate:
    def __init__(self, word: str, sensitivity: float = 0.5, detector=None) -> None:
        import soxr

        from kame_desktop.audio.wake_word import WakeWordDetector

        self.word = word
        self.detector = detector or WakeWordDetector(word, sensitivity)
        self._resample = soxr.ResampleStream(SAMPLE_RATE, 16_000, 1, dtype="float32")
        self._lock = threading.Lock()
        self.state: GateState = "waiting"
        self.wakes = 0
        self._wait()

    def _wait(self) -> None:
        self.state = "waiting"
        self._frames = 0  # since the wake word, or since the end of the turn
        self._heard = False  # the user has spoken since the wake word
        self._turn_over = False
        self._answered = False  # the front-end said its answer ended
        self._sounded = False  # the output made sound since the end of the turn
        self._quiet = 0  # output frames in a row below LOUD
        self.detector.reset()

    def gate(self, frame: np.ndarray, output_level: float) -> tuple[np.ndarray, GateState | None]:
        """(what the session hears, the new state when it changed) for one input frame."""
        with self._lock:
            if self.state == "waiting":
                if self.detector.push(self._resample.resample_chunk(np.asarray(frame, np.float32).reshape(-1))):
                    self.state = "listening"
                    self.wakes += 1
                    self._frames = 0
                    return np.zeros_like(frame), "listening"
                return np.zeros_like(frame), None
            self._frames += 1
            self._quiet = self._quiet + 1 if output_level < LOUD else 0
            if self._turn_over and output_level >= LOUD:
                self._sounded = True
            if self._done():
                self._wait()
                self._resample = type(self._resample)(SAMPLE_RATE, 16_000, 1, dtype="float32")
                return np.zeros_like(frame), "waiting"
            return frame, None

    def _done(self) -> bool:
        seconds = self._frames * FRAME_SECONDS
        if not self._heard:
            return seconds >= LISTEN_TIMEOUT_S
        if not self._turn_over:
            return False
        quiet_s = self._quiet * FRAME_SECONDS
        if self._answered:
            return quiet_s >= 0.8  # a pause between sentences is shorter
        return (self._sounded and quiet_s >= QUIET_AFTER_ANSWER_S) or seconds >= ANSWER_TIMEOUT_S

    def on_event(self, event: Event) -> None:
        with self._lock:
            if self.state != "listening":
                return
            match event:
                case SpeechStartEvent(source="user"):
                    self._heard, self._turn_over, self._answered = True, False, False
                case TurnEndEvent() if self._heard:
                    self._turn_over, self._frames, self._sounded = True, 0, False
                case SpeechEndEvent(source="assistant") if self._turn_over:
                    self._answered = True
