"""RepeatedWarning: the first occurrence as it is, then a count, never one line per repeat."""

from __future__ import annotations

import logging

from kame_desktop.logrepeat import RepeatedWarning

log = logging.getLogger("kame_desktop.test_logrepeat")


def messages(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == log.name]


def test_first_example_then_powers_of_ten_then_the_total(caplog):
    caplog.set_level("WARNING")
    warn = RepeatedWarning(log, "entry %d is late")
    for n in range(1, 1235):
        warn(n)
    warn.flush()
    assert messages(caplog) == [
        "entry 1 is late",
        "entry 1 is late (10 times so far; the first shown)",
        "entry 1 is late (100 times so far; the first shown)",
        "entry 1 is late (1000 times so far; the first shown)",
        "entry 1 is late (1234 times in all; the first shown)",
    ]


def test_without_progress_and_nothing_repeated(caplog):
    caplog.set_level("WARNING")
    once = RepeatedWarning(log, "only %s")
    once("this")
    once.flush()  # a single occurrence: no summary
    batch = RepeatedWarning(log, "frame %d is past the end", progress=False)
    for frame in range(50, 1_000_050):
        batch(frame)
    batch.flush()
    batch.flush()  # nothing new: nothing more
    assert messages(caplog) == [
        "only this",
        "frame 50 is past the end",
        "frame 50 is past the end (1000000 times in all; the first shown)",
    ]
