"""The FrontEnd protocol: what the session's inference thread drives once per 80 ms frame.

Two implementations: `kame` (the paper's speech-to-speech model with the oracle stream) and
`lite` (a cascade for machines without a GPU). Both take one 1920-sample input frame plus the
back-end signals drained for that frame, in order, and return one output frame and events.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from kame_desktop.events import FRAME_SIZE, SAMPLE_RATE, Event, Signal

__all__ = ["FRAME_SIZE", "SAMPLE_RATE", "FrameResult", "FrontEnd"]


@dataclass(frozen=True)
class FrameResult:
    pcm: np.ndarray  # float32 [FRAME_SIZE], 24 kHz mono
    events: tuple[Event, ...] = field(default_factory=tuple)


class FrontEnd(Protocol):
    kind: str  # "kame" or "lite"
    model: str  # what the status line shows: a checkpoint, a repo id, a voice
    device: str

    def step(self, frame: np.ndarray, signals: Sequence[Signal]) -> FrameResult:
        """Consume one input frame (float32 [FRAME_SIZE]) and produce one output frame."""
        ...

    def reset(self) -> None:
        """Start a new conversation: clear streaming state (audio, tokens, oracle)."""
        ...

    def close(self) -> None:
        """Stop worker threads and free what can be freed (the session is over)."""
        ...
