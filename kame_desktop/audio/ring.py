"""A single-producer single-consumer float32 ring buffer for the audio thread.

The sounddevice callback is one side, a Python thread the other. Neither takes a lock: the
producer only advances `_written` and the consumer only advances `_read` (monotonic int
counters; each is one attribute store, atomic under the GIL), and each side publishes its
counter only after copying the samples, so the other side never sees a half-written block.
The storage is allocated once; `write` and `read_into` only copy (at most two slices).
"""

from __future__ import annotations

import numpy as np


class SpscRing:
    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self._buf = np.zeros(capacity, dtype=np.float32)
        self._written = 0  # total samples ever written (producer-owned)
        self._read = 0  # total samples ever consumed (consumer-owned)

    def available(self) -> int:
        """Samples ready to read."""
        return self._written - self._read

    def space(self) -> int:
        """Samples that can be written without overwriting unread ones."""
        return self.capacity - (self._written - self._read)

    # --- producer side ---------------------------------------------------------------------------

    def write(self, x: np.ndarray) -> int:
        """Copy as much of `x` as fits; return how many samples were written (the rest is lost:
        the caller counts it as an overflow)."""
        n = min(len(x), self.space())
        if n <= 0:
            return 0
        start = self._written % self.capacity
        first = min(n, self.capacity - start)
        self._buf[start : start + first] = x[:first]
        if n > first:
            self._buf[: n - first] = x[first:n]
        self._written += n  # publish after the copy
        return n

    # --- consumer side ---------------------------------------------------------------------------

    def read_into(self, out: np.ndarray) -> int:
        """Copy up to len(out) samples into `out`; return how many (the rest of `out` is left
        untouched)."""
        n = min(len(out), self.available())
        if n <= 0:
            return 0
        start = self._read % self.capacity
        first = min(n, self.capacity - start)
        out[:first] = self._buf[start : start + first]
        if n > first:
            out[first:n] = self._buf[: n - first]
        self._read += n  # publish after the copy
        return n

    def skip(self, n: int) -> int:
        """Drop up to `n` of the oldest samples; return how many were dropped."""
        n = max(0, min(n, self.available()))
        self._read += n
        return n
