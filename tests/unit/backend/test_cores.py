"""The cores at the user's pause (backend/cores.py): while the accurate ASR checks the words, the
in-process LLM holds at its next token."""

from __future__ import annotations

import threading
import time

from kame_desktop.backend.cores import HOLD_S, PauseCores


def writer(cores: PauseCores, stop: threading.Event) -> tuple[threading.Thread, threading.Event]:
    """A thread that, like the LLM's, asks whether it may write its next token."""
    wrote = threading.Event()
    thread = threading.Thread(target=lambda: (cores.may_write(stop), wrote.set()))
    thread.start()
    return thread, wrote


def test_the_llm_holds_while_the_check_runs_and_goes_on_after_it():
    cores = PauseCores()
    cores.before_check()
    thread, wrote = writer(cores, threading.Event())
    assert not wrote.wait(0.2)  # held
    cores.after_check()
    assert wrote.wait(HOLD_S)
    thread.join()


def test_a_held_llm_stops_at_once_when_its_answer_is_cancelled():
    cores = PauseCores()
    cores.before_check()
    stop = threading.Event()
    thread, wrote = writer(cores, stop)
    stop.set()
    assert wrote.wait(HOLD_S / 2)
    thread.join()


def test_no_check_no_hold_and_a_hold_never_outlasts_its_limit():
    cores = PauseCores()
    start = time.monotonic()
    cores.may_write(threading.Event())
    assert time.monotonic() - start < 0.05
    cores.before_check()  # a check that never ends (a recognizer that failed mid-pass)
    start = time.monotonic()
    cores.may_write(threading.Event())
    assert HOLD_S * 0.9 <= time.monotonic() - start < HOLD_S * 3
