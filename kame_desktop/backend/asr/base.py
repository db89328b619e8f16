"""The streaming ASR protocol.

A provider is fed the user's audio (24 kHz mono float32, in order, any chunk size) with the
session time at the end of each chunk, and answers with events on the same clock:
`AsrPartialEvent` (a revision of the words not yet committed), `AsrFinalEvent` (committed words,
never revised), and from its VAD `SpeechStartEvent("user")`, `SpeechEndEvent("user")` and
`TurnEndEvent("vad")`. Calls are synchronous and may take a while (the back-end runs them on its
own thread, never on the inference thread). The back-end decides the turn on its own path
(backend/turn.py), ignores the VAD events of its recognizer and calls `end_turn` when the turn is
over, so the last words are committed then, not after the recognizer's own hang-over.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np

from kame_desktop.audio.vad import SAMPLE_RATE as VAD_RATE
from kame_desktop.audio.vad import SileroVad
from kame_desktop.events import SAMPLE_RATE, Event, SpeechEndEvent, SpeechStartEvent, TurnEndEvent


class AsrProvider(Protocol):
    name: str  # what the status line shows, e.g. "whisper:base"
    heard_until: float  # session time up to which the words are decoded (-inf: not known)

    def feed(self, pcm: np.ndarray, t_end: float) -> list[Event]:
        """Take the next chunk of user audio ending at session time `t_end` (seconds)."""
        ...

    def flush(self, t_end: float) -> list[Event]:
        """The audio ended: commit whatever is pending."""
        ...

    def end_turn(self, t_end: float, speech_end_t: float | None = None) -> list[Event]:
        """The user's turn is over, the speech having ended at session time `speech_end_t` (None:
        at `t_end`): commit the words of the speech in progress now."""
        ...

    def reset(self) -> None:
        """Forget buffered audio and pending words (new conversation)."""
        ...


class ClockedAudio:
    """The 16 kHz audio a recognizer still holds, placed on two clocks: `start` is the absolute
    sample index of `samples[0]` (the VAD's clock), `t_end` the session time of the last sample."""

    RATE = VAD_RATE

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


class SegmentingAsr:
    """The front half every VAD-cut recognizer shares: 24 kHz → 16 kHz, the Silero VAD, and the
    audio of the current utterance (with pre-roll) on two clocks. Subclasses recognize:

    - `_utterance_started(sample)`: the VAD heard speech start at this absolute 16 kHz sample;
    - `_more_audio(n)`: `n` new samples of an utterance in progress (partial passes);
    - `_utterance_ended(sample)`: speech ended at `sample` (or the audio did): commit its words.

    The user's `speech_start`/`speech_end`/`turn_end` events come from here, in order with the
    subclass's words. `keeps_audio = False` (a recognizer with its own audio path) trims the
    buffer at every chunk."""

    RATE = ClockedAudio.RATE
    heard_until = -math.inf  # session time up to which the words are decoded (whisper: its last pass, or now in a pause it heard)
    PREROLL_S = 0.3  # audio kept before the VAD's start: its onset detection lags the first phoneme
    IDLE_KEEP_S = 1.0  # audio kept between utterances: the start is reported up to ~0.2 s late
    keeps_audio = True

    def __init__(self, vad: SileroVad | None = None) -> None:
        import soxr

        self._soxr = soxr
        self.vad = vad or SileroVad()

    def reset(self) -> None:
        self._resampler = self._soxr.ResampleStream(SAMPLE_RATE, self.RATE, 1, dtype="float32")
        self.vad.reset()
        self._buf = ClockedAudio()  # pre-roll, or the utterance from its trim point
        self.in_speech = False
        self._heard_to = 0  # absolute sample up to which the last utterance's words were taken

    def feed(self, pcm: np.ndarray, t_end: float) -> list[Event]:
        x = self._resampler.resample_chunk(np.asarray(pcm, np.float32).reshape(-1))
        self._buf.append(x, t_end)
        events: list[Event] = []
        for kind, t in self.vad.process(x):
            sample = round(t * self.RATE)
            if kind == "start":
                # The pre-roll stops where the last utterance's words end: a turn that ended in a
                # short pause would otherwise hear its last word again ("what what part of …").
                self._buf.drop_before(max(sample - round(self.PREROLL_S * self.RATE), self._heard_to))
                self.in_speech = True
                events.append(SpeechStartEvent("user"))
                events += self._utterance_started(sample)
            elif self.in_speech:
                self.in_speech = False
                events += self._utterance_ended(sample)
                events += [SpeechEndEvent("user"), TurnEndEvent("vad")]
        if self.in_speech and self.keeps_audio:
            events += self._more_audio(len(x))
        else:
            self._buf.drop_before(self._buf.total - round(self.IDLE_KEEP_S * self.RATE))
        return events

    def flush(self, t_end: float) -> list[Event]:
        """Commit the pending utterance (with `SpeechEndEvent`, but no `TurnEndEvent`: whoever
        ended the audio, e.g. push-to-talk, announces the turn) and start afresh."""
        self._buf.append(self._resampler.resample_chunk(np.zeros(0, np.float32), last=True), t_end)
        events: list[Event] = []
        if self.in_speech:
            events += self._utterance_ended(self._buf.total)
            events.append(SpeechEndEvent("user"))
        self.reset()
        return events

    def end_turn(self, t_end: float, speech_end_t: float | None = None) -> list[Event]:
        """The turn detector ended the turn: commit the utterance now, up to where it heard the
        speech end (a recognizer that decoded that far already has the words); speech that
        follows starts a new one (the VAD forgets the speech it was still in)."""
        if not self.in_speech:
            return []
        self.in_speech = False
        end = self._buf.total if speech_end_t is None else min(self._buf.sample_of(speech_end_t), self._buf.total)
        try:  # the recognizer may look at the pause the VAD is in before it forgets it
            return self._utterance_ended(end)
        finally:
            self.vad.end_speech()

    def _utterance_started(self, sample: int) -> list[Event]:
        return []

    def _more_audio(self, n: int) -> list[Event]:
        return []

    def _utterance_ended(self, sample: int) -> list[Event]:
        raise NotImplementedError
