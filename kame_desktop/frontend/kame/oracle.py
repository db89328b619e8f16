"""OracleStream: where oracle tokens meet frames (spec §2).

A run is `[start, t0, t1, ...]` anchored at `origin`, the LM step at which it was (re)started:
element i is fed at step `origin + i` or never. Tokens whose slot has already passed when they
arrive are dropped (counted as late), never shifted; when nothing is due the stream feeds PAD.
The inference thread is the only writer and reader, so there is no locking here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass
class OracleStream:
    start_id: int  # = text_card, also the text initial token
    pad_id: int
    tokens: list[int] | None = None
    origin: int = 0
    request: int | None = None  # the back-end request whose answer is running

    def reset(self, step: int, request: int | None = None) -> None:
        """Start a new run: the start token is fed at `step` (the next LM step)."""
        self.tokens = [self.start_id]
        self.origin = step
        self.request = request

    def append(self, ids: Sequence[int], step: int) -> int:
        """Append tokens to the current run before LM step `step`; returns how many of them
        were late (their slot < step), which will never be fed."""
        if not ids:
            return 0
        if self.tokens is None:
            self.reset(step, self.request)
        assert self.tokens is not None
        first_slot = self.origin + len(self.tokens)
        self.tokens.extend(ids)
        return max(0, min(len(ids), step - first_slot))

    def select(self, step: int) -> int:
        """The oracle id to feed at LM step `step`."""
        if self.tokens is not None:
            r = step - self.origin
            if 0 <= r < len(self.tokens):
                return self.tokens[r]
        return self.pad_id

    def clear(self) -> None:
        """Forget the current run (a new session starts with PAD, spec §2.6)."""
        self.tokens = None
        self.origin = 0
        self.request = None
