"""Who has the two cores when the user pauses: the check of the words first, then the answer.

With Whisper `auto` a pause starts two jobs at once: the LLM writing the answer to the cheap
pause pass's words (llama.cpp, 2 threads) and the accurate model checking those words (1 thread).
On two cores they slowed each other down, and the check decides whether that answer is kept at
all. So while the accurate model checks, the in-process LLM holds at its next token (llama.cpp
cannot stop in the middle of reading its prompt, so that part still overlaps); after the check
it writes on with both cores, or is dropped at once when the words differ.

Measured against the other order (`bench lite`, one run each on this machine): the answer first
and the check after its first clause made every turn on which tiny.en misheard a word ("the
capital of friends") wait for a first clause it then threw away; 1790 ms headline median.

Calls come from the ASR's thread (`before_check`, `after_check`) and the LLM's (`may_write`).
A hold never lasts longer than `HOLD_S` per token.
"""

from __future__ import annotations

import threading

HOLD_S = 1.0


class PauseCores:
    def __init__(self) -> None:
        self._llm_may_write = threading.Event()
        self._llm_may_write.set()

    def before_check(self) -> None:
        """The accurate recognizer is about to check the words: the LLM holds meanwhile."""
        self._llm_may_write.clear()

    def after_check(self) -> None:
        self._llm_may_write.set()

    def may_write(self, stop: threading.Event) -> None:
        """Between tokens: hold while a check runs (at most HOLD_S, less when `stop` is set)."""
        if self._llm_may_write.is_set():
            return
        for _ in range(round(HOLD_S / 0.02)):
            if self._llm_may_write.wait(0.02) or stop.is_set():
                return
