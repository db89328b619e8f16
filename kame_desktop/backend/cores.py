"""Who has the two cores when the user pauses: one for the check of the words, one for the answer.

With Whisper `auto` a pause starts two jobs at once: the LLM writing the answer to the cheap
pause pass's words (llama.cpp, 2 threads) and the accurate model checking those words (1
thread). Three threads on two cores slowed both: llama.cpp's threads wait for each other at every
step, so one that loses its core stalls the other. So while the accurate model checks, the
in-process LLM runs on one thread (reading its prompt and writing), and after the check on all of
its threads again; when the words differ its answer is dropped at once.

Measured on this machine (a probe: the 1.5B at the pause of six Piper questions, twice, the
partial's words already read, Whisper base checking the clip beside it): the eighth token came
547 ms after the ask this way, against 633 ms when the LLM held its tokens until the check ended
(the order before: its prompt read on two threads still slowed the check from 274 to 375 ms).
Answer first with the check after its first clause was worse still (`bench lite`, 1790 ms
headline): every turn on which tiny.en misheard a word waited for a clause it then threw away.

The ASR calls `before_check` (when its cheap pause pass has words a check will follow, and before
the check) and `after_check`, from its thread; the LLM asks `llm_threads` on its own thread before
each step. A check that never ends narrows the LLM for at most NARROW_MAX_S.
"""

from __future__ import annotations

import time

NARROW_MAX_S = 1.0


class PauseCores:
    def __init__(self) -> None:
        self._checking_since: float | None = None

    def before_check(self) -> None:
        """The accurate recognizer checks the words now (or next): the LLM takes one core."""
        self._checking_since = time.monotonic()

    def after_check(self) -> None:
        self._checking_since = None

    def llm_threads(self, full: int) -> int:
        """How many threads the in-process LLM may use for its next step."""
        since = self._checking_since
        if since is None or time.monotonic() - since > NARROW_MAX_S:
            return full
        return 1
