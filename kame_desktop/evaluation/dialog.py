"""A scripted user: plays utterances into a session the way a person would take turns.

Each utterance starts `gap_s` after the companion's reply to the previous one has gone quiet,
and at the latest `cap_s` after the previous utterance ended (a companion that never answers, or
never stops, does not hold the run up). The dialog is both the session's source and an observer
of its output, so turn-taking reacts to what the companion actually plays. Pacing comes from a
paced NullSource: the utterances are mixed into its frames.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from kame_desktop.audio.sources import AudioSink, NullSource
from kame_desktop.bench.lite import loud_windows, speech_end_s
from kame_desktop.events import FRAME_SECONDS, FRAME_SIZE

GAP_S = 2.0  # a person's pause after the reply, before the next question
CAP_S = 15.0  # the longest wait for a reply to finish


@dataclass(frozen=True)
class Segment:
    """One utterance and what followed it, in session frames: [start, end)."""

    index: int
    start: int
    end: int
    speech_end_s: float  # end of the user's speech, session clock

    @property
    def start_s(self) -> float:
        return self.start * FRAME_SECONDS


class Dialog:
    """`read()` for the session's source; wrap the sink with `sink()` so the dialog hears the
    output. `on_segment(segment, out_pcm)` runs when a segment closes (its output is complete)."""

    def __init__(
        self,
        utterances: Sequence[np.ndarray],
        *,
        realtime: bool = True,
        gap_s: float = GAP_S,
        cap_s: float = CAP_S,
        on_segment: Callable[[Segment, np.ndarray], None] | None = None,
    ) -> None:
        self._utterances = [np.asarray(u, dtype=np.float32) for u in utterances]
        self._clock = NullSource(realtime=realtime)
        self._gap = round(gap_s / FRAME_SECONDS)
        self._cap = round(cap_s / FRAME_SECONDS)
        self._on_segment = on_segment
        self.segments: list[Segment] = []
        self._frame = 0  # frames read so far
        self._index = -1  # utterance playing or last played
        self._start = 0  # its first frame
        self._speech_end = 0  # frame in which its speech ends
        self._last_loud: int | None = None  # last output frame with sound since it started
        self._out: list[np.ndarray] = []  # output of the current segment
        self._done = False
        self._begin(0)

    def _begin(self, index: int) -> None:
        self._index, self._start, self._last_loud, self._out = index, self._frame, None, []
        pcm = self._utterances[index]
        self._speech_end = self._start + math.ceil(round(speech_end_s(pcm) / FRAME_SECONDS, 6))
        self._speech_end_s = self._start * FRAME_SECONDS + speech_end_s(pcm)

    def _turn_over(self) -> bool:
        """The user may speak again: the reply went quiet `gap` frames ago, or `cap` passed."""
        length = math.ceil(len(self._utterances[self._index]) / FRAME_SIZE)
        if self._frame < self._start + max(length, 1):
            return False  # still playing the utterance
        if self._frame >= self._speech_end + self._cap:
            return True
        replied = self._last_loud is not None and self._last_loud >= self._speech_end
        return replied and self._frame - self._last_loud > self._gap

    def _close(self) -> None:
        out = np.concatenate(self._out) if self._out else np.zeros(0, dtype=np.float32)
        segment = Segment(self._index, self._start, self._frame, self._speech_end_s)
        self.segments.append(segment)
        if self._on_segment:
            self._on_segment(segment, out)

    def read(self) -> np.ndarray | None:
        if self._done:
            return None
        if self._turn_over():
            self._close()
            if self._index + 1 == len(self._utterances):
                self._done = True
                return None
            self._begin(self._index + 1)
        frame = self._clock.read()
        assert frame is not None  # an endless clock
        offset = (self._frame - self._start) * FRAME_SIZE
        chunk = self._utterances[self._index][offset : offset + FRAME_SIZE]
        frame[: len(chunk)] = chunk
        self._frame += 1
        return frame

    def heard(self, out: np.ndarray) -> None:
        """The session's output for the frame just read."""
        self._out.append(np.array(out, dtype=np.float32))
        if len(loud_windows(out)):
            self._last_loud = self._frame - 1

    def sink(self, inner: AudioSink) -> AudioSink:
        dialog = self

        class Heard:
            def write(self, frame: np.ndarray) -> None:
                dialog.heard(frame)
                inner.write(frame)

            def close(self) -> None:
                inner.close()

        return Heard()
