"""Who has the two cores: Whisper's passes take one, the in-process LLM the rest, and at a pause
the LLM reads the question before the accurate model checks it.

Three threads on two cores slow everything: llama.cpp's threads wait for each other at every
step, so one that loses its core stalls the other. Measured here (the 1.5B beside base
decoding in a loop): on two threads it read a prompt at 65 ms a token and wrote at 138-199 ms,
on one thread 37 and 65-70 ms; alone, two threads read at 14-19 ms and wrote at 48 ms, one
thread at 29-33 and 68-75 ms. So:
- while a Whisper pass runs (every pass: those while the user talks too), the LLM steps on one
  thread, and on all of its threads between passes;
- at a pause (`auto`): the cheap pause pass's words are asked at once, and the accurate model's
  check of them waits until the LLM has read them, on both cores (a read is twice as fast on
  two threads, writing only 1.4 times), for at most PROMPT_WAIT_S; when no read begins (a
  partial had those words already), for the read in progress. Then the check runs on one core
  (~0.1 s when it takes the words: whisper.py's CHECK_MIN_PROB) and the LLM writes on the
  other; when the words differ its answer is dropped at once.
  Before, the LLM read beside the check, on one thread: the question's last words and the
  template's close, 7-12 tokens, took 270-670 ms of the reply's time in `bench lite`'s traces.
  (Earlier orders, measured: the LLM holding its tokens until the check ended, 633 ms to the
  eighth token against 547 with one thread beside it; the answer's first clause written
  before the check, `bench lite` headline 1790 ms against 1760 ms.)

The ASR calls `asr_busy`/`asr_idle` around each pass, `pause_asked` when the cheap pause pass's
words go out and `before_check` before the check (it may wait there); the LLM calls
`reading_prompt` around a prompt read and `llm_threads` before each step, on its own thread. A
pass that never ends narrows the LLM for at most NARROW_MAX_S.
"""

from __future__ import annotations

import threading
import time

NARROW_MAX_S = 1.0
PROMPT_WAIT_S = 0.5  # the longest a check waits for the LLM's read of the pause's words
# The time the request asked with the pause's words takes to begin its read (the event crosses to
# the back-end's loop and on to the LLM's thread: a few ms): a check waits this long for it to
# begin. None begins when the running request already has those words.
START_GRACE_S = 0.03


class PauseCores:
    def __init__(self, llm_in_process: bool = True) -> None:
        self.llm_in_process = llm_in_process  # False (a server's LLM): no read to wait for
        self._busy_since: float | None = None
        self._state = threading.Condition()
        self._reading = False
        self._reads = 0  # prompt reads begun
        self._asked: tuple[float, int] | None = None  # (when the pause's words went out, reads begun then)

    def asr_busy(self) -> None:
        """A Whisper pass starts: the LLM takes one core (and a pass other than the check means
        the pause's words will not be checked next)."""
        self._asked = None
        self._busy_since = time.monotonic()

    def asr_idle(self) -> None:
        self._busy_since = None

    def pause_asked(self) -> None:
        """The cheap pause pass's words go out (the LLM is asked with them now)."""
        with self._state:
            self._asked = (time.monotonic(), self._reads)

    def before_check(self) -> None:
        """The accurate model is about to check the pause's words: wait (bounded) for the LLM to
        read them on both cores, then take one."""
        with self._state:
            asked, self._asked = self._asked, None
            if asked is not None and self.llm_in_process:
                since, reads = asked
                grace = since + START_GRACE_S - time.monotonic()
                # A read that began after the ask (not the end of a superseded one's), or else the
                # read in progress (the request that already had these words), then its end.
                began = self._state.wait_for(lambda: self._reads > reads, timeout=max(grace, 0.0))
                if began or self._reading:
                    self._state.wait_for(lambda: not self._reading, timeout=PROMPT_WAIT_S)
        self.asr_busy()

    def reading_prompt(self, reading: bool) -> None:
        """The LLM starts (True) or ends (False) reading a prompt."""
        with self._state:
            self._reading = reading
            if reading:
                self._reads += 1
            self._state.notify_all()

    def llm_threads(self, full: int) -> int:
        """How many threads the in-process LLM may use for its next step."""
        since = self._busy_since
        if since is None or time.monotonic() - since > NARROW_MAX_S:
            return full
        return 1
