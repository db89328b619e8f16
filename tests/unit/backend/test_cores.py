"""The cores at the user's pause (backend/cores.py): while the accurate ASR checks the words, the
in-process LLM runs on one thread, and on all of its threads again after the check."""

from __future__ import annotations

from kame_desktop.backend import cores as cores_module
from kame_desktop.backend.cores import NARROW_MAX_S, PauseCores


def test_the_llm_takes_one_core_while_the_check_runs_and_all_of_its_own_after_it():
    cores = PauseCores()
    assert cores.llm_threads(2) == 2
    cores.before_check()
    assert cores.llm_threads(2) == 1
    assert cores.llm_threads(1) == 1
    cores.after_check()
    assert cores.llm_threads(2) == 2


def test_a_check_that_never_ends_narrows_the_llm_for_a_limited_time(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(cores_module.time, "monotonic", lambda: now[0])
    cores = PauseCores()
    cores.before_check()  # a recognizer that failed mid-pass: no after_check
    now[0] += NARROW_MAX_S * 0.9
    assert cores.llm_threads(2) == 1
    now[0] += NARROW_MAX_S * 0.2
    assert cores.llm_threads(2) == 2
