"""The streaming ASR protocol.

A provider is fed the user's audio (24 kHz mono float32, in order, any chunk size) with the
session time at the end of each chunk, and answers with events on the same clock:
`AsrPartialEvent` (a revision of the words not yet committed), `AsrFinalEvent` (committed words,
never revised), and from its VAD `SpeechStartEvent("user")`, `SpeechEndEvent("user")` and
`TurnEndEvent("vad")`. Calls are synchronous and may take a while (the back-end runs them on its
own thread, never on the inference thread).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from kame_desktop.events import Event


class AsrProvider(Protocol):
    name: str  # what the status line shows, e.g. "whisper:base"

    def feed(self, pcm: np.ndarray, t_end: float) -> list[Event]:
        """Take the next chunk of user audio ending at session time `t_end` (seconds)."""
        ...

    def flush(self, t_end: float) -> list[Event]:
        """The audio ended: commit whatever is pending."""
        ...

    def reset(self) -> None:
        """Forget buffered audio and pending words (new conversation)."""
        ...


class ClockedAudio:
    """The 16 kHz audio a recognizer still holds, placed on two clocks: `start` is the absolute
    sample index of `samples[0]` (the VAD's clock), `t_end` the session time of the last sample."""

    RATE = 16_000

    def __init__(self) -> None:
        self.samples = np.zeros(0, np.float32)
        self.start = 0
        self.t_end = 0.0

    @property
    def total(self) -> int:
        """Absolute index one past the newest sample."""
        return self.start + len(self.samples)

    def append(self, x: np.ndarray, t_end: float) -> None:
        self.samples = np.concatenate([self.samples, x])
        self.t_end = t_end

    def time_of(self, sample: int) -> float:
        # The session clock is t_end at the newest sample; older samples are that much earlier.
        return self.t_end - (self.total - sample) / self.RATE

    def sample_of(self, t: float) -> int:
        return self.total - round((self.t_end - t) * self.RATE)

    def drop_before(self, sample: int) -> None:
        cut = min(max(sample - self.start, 0), len(self.samples))
        self.samples = self.samples[cut:]
        self.start += cut
