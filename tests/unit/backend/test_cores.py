"""The cores (backend/cores.py): while a Whisper pass runs the in-process LLM runs on one thread,
on all of its threads between passes, and at a pause the check of the words waits for the LLM's
read of them."""

from __future__ import annotations

import threading

from kame_desktop.backend import cores as cores_module
from kame_desktop.backend.cores import NARROW_MAX_S, PauseCores

PATIENCE_S = 10.0  # a bound only a hang reaches, on any machine


def test_the_llm_takes_one_core_while_a_pass_runs_and_all_of_its_own_after_it():
    cores = PauseCores()
    assert cores.llm_threads(2) == 2
    cores.asr_busy()
    assert cores.llm_threads(2) == 1
    assert cores.llm_threads(1) == 1
    cores.asr_idle()
    assert cores.llm_threads(2) == 2


def test_a_pass_that_never_ends_narrows_the_llm_for_a_limited_time(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(cores_module.time, "monotonic", lambda: now[0])
    cores = PauseCores()
    cores.asr_busy()  # a recognizer that failed mid-pass: no asr_idle
    now[0] += NARROW_MAX_S * 0.9
    assert cores.llm_threads(2) == 1
    now[0] += NARROW_MAX_S * 0.2
    assert cores.llm_threads(2) == 2


def checking(cores: PauseCores) -> threading.Event:
    """Runs before_check on another thread (the ASR's); the event is set when it returns."""
    done = threading.Event()

    def check():
        cores.before_check()
        done.set()

    threading.Thread(target=check, daemon=True).start()
    return done


def test_the_check_waits_while_the_llm_reads_the_pause_words_on_both_cores(monkeypatch):
    monkeypatch.setattr(cores_module, "START_GRACE_S", PATIENCE_S)
    cores = PauseCores()
    cores.pause_asked()
    cores.reading_prompt(True)
    done = checking(cores)
    assert not done.wait(0.3), "the check began while the LLM read the words"
    assert cores.llm_threads(2) == 2  # the read has both cores
    cores.reading_prompt(False)
    assert done.wait(PATIENCE_S)
    assert cores.llm_threads(2) == 1  # then the check takes one


def test_a_read_that_ended_before_the_check_or_none_at_all_costs_the_check_no_wait(monkeypatch):
    monkeypatch.setattr(cores_module, "START_GRACE_S", PATIENCE_S)
    cores = PauseCores()
    cores.pause_asked()
    cores.reading_prompt(True)
    cores.reading_prompt(False)  # the request's read was quick
    assert checking(cores).wait(PATIENCE_S / 2)
    # No pause words asked (a check at the end of the utterance): no wait either.
    assert checking(cores).wait(PATIENCE_S / 2)


def test_the_check_waits_for_a_read_to_begin_and_for_it_to_end_only_so_long(monkeypatch):
    monkeypatch.setattr(cores_module, "START_GRACE_S", 0.05)
    monkeypatch.setattr(cores_module, "PROMPT_WAIT_S", 0.05)
    cores = PauseCores()
    cores.pause_asked()  # the running request had these words already: no read comes
    assert checking(cores).wait(PATIENCE_S)
    cores.pause_asked()
    cores.reading_prompt(True)  # a read that never ends
    assert checking(cores).wait(PATIENCE_S)


def test_with_a_server_s_llm_the_check_never_waits(monkeypatch):
    monkeypatch.setattr(cores_module, "START_GRACE_S", PATIENCE_S)
    cores = PauseCores(llm_in_process=False)
    cores.pause_asked()
    assert checking(cores).wait(PATIENCE_S / 2)


def test_the_end_of_a_superseded_read_is_not_the_read_of_the_pause_words(monkeypatch):
    monkeypatch.setattr(cores_module, "START_GRACE_S", PATIENCE_S)
    cores = PauseCores()
    cores.reading_prompt(True)  # a speculative request reads a partial's words
    cores.pause_asked()
    cores.reading_prompt(False)  # … and is cancelled: its read ends
    done = checking(cores)
    assert not done.wait(0.3), "the check took the end of the old read for the new one"
    cores.reading_prompt(True)  # the request asked with the pause's words
    assert not done.wait(0.3)
    cores.reading_prompt(False)
    assert done.wait(PATIENCE_S)


def test_a_pass_after_the_pause_words_means_their_check_is_not_next(monkeypatch):
    monkeypatch.setattr(cores_module, "START_GRACE_S", PATIENCE_S)
    cores = PauseCores()
    cores.pause_asked()
    cores.asr_busy()  # the user talked on: a pass while they talk
    cores.asr_idle()
    assert checking(cores).wait(PATIENCE_S / 2)  # the final check later waits for nothing


def test_the_check_waits_for_a_read_in_progress_that_already_had_the_pause_words(monkeypatch):
    """A partial heard the whole question before the pause: its request reads those words when
    the pause pass finds no new ones (no read begins). The check, one core for ~0.1 s, waits
    for that read to end rather than halve it."""
    monkeypatch.setattr(cores_module, "START_GRACE_S", 0.05)
    cores = PauseCores()
    cores.reading_prompt(True)  # the request asked with the partial's words
    cores.pause_asked()  # the pause pass heard the same words: nothing new is asked
    done = checking(cores)
    assert not done.wait(0.3), "the check began beside the read"
    cores.reading_prompt(False)
    assert done.wait(PATIENCE_S)
    assert cores.llm_threads(2) == 1
