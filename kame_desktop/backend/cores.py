"""Who has the two cores when the user pauses: the answer first, then the check of its words.

With Whisper `auto` a pause starts three jobs at once: the LLM writing the answer to the cheap
pause pass's words (llama.cpp, 2 threads), the accurate model checking those words (1 thread)
and, once the answer's first clause is written, Piper speaking it (1 thread). On two cores they
slowed each other down (the 1.5B's first clause took 840 ms in `bench lite` where alone it takes
~450). So they take turns, each with the cores it needs:

1. the LLM writes the first clause alone (the check waits: `before_check`);
2. then the check and Piper run side by side, one core each, while the LLM holds at its next
   token (`may_write`);
3. after the check the LLM writes on.

Nobody waits longer than `HOLD_S`: a wait that times out only costs the overlap it avoided. The
answer plays only once the check agrees with its words (the OracleManager and the lite front-end
see to that), so the order changes when things happen, never what is said.

Calls come from three threads: the ASR's (`answer_asked`, `before_check`, `after_check`), the
back-end loop's (`answering`, `first_clause`, `answer_ended`) and the LLM's (`may_write`).
"""

from __future__ import annotations

import re
import threading

HOLD_S = 1.0
_CLAUSE_END = re.compile(r"\w[,;:.!?](?:\s|$)")
_CLAUSE_WORDS = 3  # the lite front-end's shortest opening clause
_PHRASE_WORDS = 9  # …and where it stops waiting for punctuation


def first_clause_written(text: str) -> bool:
    """Whether an answer's text holds the clause the lite front-end opens with."""
    words = len(text.split())
    return words >= _PHRASE_WORDS or (words >= _CLAUSE_WORDS and _CLAUSE_END.search(text) is not None)


class PauseCores:
    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled  # off: no policy asks at the pause, so nothing is ever held
        self._lock = threading.Lock()
        self._check_may_run = threading.Event()
        self._check_may_run.set()
        self._llm_may_write = threading.Event()
        self._llm_may_write.set()
        self._clause_written = False  # of the answer being written now

    # --- the ASR thread ---------------------------------------------------------------------------

    def answer_asked(self) -> None:
        """The cheap pause pass's words are on their way to the LLM."""
        self.answering()

    def before_check(self) -> None:
        """An accurate pass is about to run: wait for the answer's first clause; then hold the
        LLM while the check runs, if it is writing on."""
        self._check_may_run.wait(HOLD_S)
        with self._lock:
            if self._clause_written:
                self._llm_may_write.clear()

    def after_check(self) -> None:
        self._llm_may_write.set()

    # --- the back-end loop --------------------------------------------------------------------------

    def answering(self) -> None:
        """An answer to the pause's words is being written: checks wait for its first clause."""
        if self.enabled:
            with self._lock:
                self._clause_written = False
                self._check_may_run.clear()

    def first_clause(self) -> None:
        """The answer's first clause is written: the check may run, and the LLM holds during it."""
        with self._lock:
            self._clause_written = self.enabled
            self._check_may_run.set()

    def answer_ended(self) -> None:
        """No answer is being written (it finished, failed or was dropped)."""
        with self._lock:
            self._clause_written = False
            self._check_may_run.set()
            self._llm_may_write.set()

    # --- the LLM's thread ---------------------------------------------------------------------------

    def may_write(self, stop: threading.Event) -> None:
        """Between tokens: hold while a check runs (at most HOLD_S, less when `stop` is set)."""
        if self._llm_may_write.is_set():
            return
        for _ in range(round(HOLD_S / 0.02)):
            if self._llm_may_write.wait(0.02) or stop.is_set():
                return
