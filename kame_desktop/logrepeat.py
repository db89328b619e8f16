"""One warning that may repeat thousands of times (a signal dropped every frame, an oracle entry
per line of a script): the first occurrence is logged as it is, later ones are counted, and the
count goes out as a few lines (at 10, 100, 1000 … occurrences, and the total at `flush()`), so
a million repeats cost a handful of lines instead of megabytes of stderr."""

from __future__ import annotations

import logging
import threading


class RepeatedWarning:
    """Call it with the arguments of `message` (a %-format) each time the warning applies."""

    def __init__(self, logger: logging.Logger, message: str, *, progress: bool = True) -> None:
        self.logger = logger
        self.message = message
        self.progress = progress  # False: only the first and, at flush, the total
        self.count = 0
        self._first = ""
        self._reported = 0  # the count last logged
        self._lock = threading.Lock()

    def __call__(self, *args: object) -> None:
        with self._lock:
            self.count += 1
            count = self.count
            if count == 1:
                self._first = self.message % args
                self._reported = 1
        if count == 1:
            self.logger.warning("%s", self._first)
        elif self.progress and _is_power_of_ten(count):
            self._report(count, "so far")

    def flush(self) -> None:
        """Log the total if repeats were counted since the last line; then start counting anew."""
        with self._lock:
            count, self.count = self.count, 0
        if count > 1 and count != self._reported:
            self._report(count, "in all")
        self._reported = 0

    def _report(self, count: int, when: str) -> None:
        self._reported = count
        self.logger.warning("%s (%d times %s; the first shown)", self._first, count, when)


def _is_power_of_ten(n: int) -> bool:
    while n % 10 == 0:
        n //= 10
    return n == 1
