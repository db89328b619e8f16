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
