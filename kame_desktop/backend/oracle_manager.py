"""OracleManager (spec §3.3–3.6): decides when to (re-)ask the LLM while the user is speaking,
chooses which answer the front-end hears, and turns that answer into oracle signals.

The policies share the same bookkeeping, rate limit (at most 5 starts in any 2 s) and
cancellation:
- `polling`, the reference's: every 0.5 s, re-ask once the user said ≥ 2 new words or an ASR
  final arrived (a final consumed while rate-limited is lost, as in the reference);
- `reactive` (default): decide as soon as an ASR event brings ≥ 2 new words or a final (after a
  short debounce that coalesces bursts), and when rate-limited, decide again as soon as the
  window frees; a final that only confirms the words the running request already has is not
  a reason to ask again. The pause pass's words (a partial marked `pause`: the user is silent,
  and these may be the turn's final words) are asked at once, past the word count, the debounce
  and the rate limit, unless the running request has them already;
- `end_of_turn`: no speculation, ask once the turn has ended (the cascade baseline).
Which answer is heard (spec §3.3b): a stream is *adopted* when it sends its first non-blank text,
if it is newer than the adopted one; then every older stream is cancelled and the reset goes out
with the new text. A provider that serves concurrent requests (`LlmProvider.overlaps`, the cloud
ones) keeps the running streams when it asks again, up to `max_streams`, so the front-end keeps
its guidance until a newer answer speaks. One that cannot (the in-process model) cancels at ask,
and so does `max_streams` 1. A server that ends a running stream when a new request arrives
(`llama_cpp.server`) degrades to the same by itself: a failure of a stream that a newer live one
supersedes is dropped quietly.
When a turn ends on words the recognizer did not trust (`understood`), the LLM is not asked
about them: every stream stops and the front-end hears a short request to repeat instead (the
oracle says it), announced by an `asr_unclear` event; the words leave the LLM's transcript.
It runs on the back-end's asyncio loop; the front-end sees only signals on its bounded queue.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from kame_desktop.backend.cleaning import ReplyCleaner
from kame_desktop.backend.llm.base import LlmProvider, Message
from kame_desktop.backend.prompts import (
    ANSWER_TOKENS,
    ASSISTANT,
    DIALOGUE_FORMATS,
    MESSAGE_TOKENS,
    SYSTEM_PROMPT,
    USER,
    Conversation,
    build_messages,
    with_note,
)
from kame_desktop.backend.tools.base import ToolCall, ToolResult, TurnTools
from kame_desktop.backend.words import normalized_words, shared_prefix
from kame_desktop.choices import POLICIES, Policy, check_choice
from kame_desktop.errors import LlmError
from kame_desktop.events import (
    AnnouncementEvent,
    AsrFinalEvent,
    AsrPartialEvent,
    AsrUnclearEvent,
    ErrorEvent,
    Event,
    LlmAdoptedEvent,
    LlmCancelledEvent,
    LlmChunkEvent,
    LlmDoneEvent,
    LlmFirstChunkEvent,
    LlmRequestEvent,
    OracleDone,
    OracleReset,
    OracleText,
    Signal,
    ToolCallEvent,
    ToolResultEvent,
    TurnEnded,
    TurnEndEvent,
)

log = logging.getLogger(__name__)

# What one request may pass on to the front-end: a spoken reply is a few sentences, and a server
# that answers megabytes in one chunk must not flood the front-end, the timeline or memory.
MAX_ANSWER_CHARS = 4000
TOO_LONG = (
    f"the LLM's answer is longer than {MAX_ANSWER_CHARS:,} characters: the rest is dropped — "
    "ask for shorter answers in the system prompt (Settings)"
)


# "Didn't catch that" (measured with the app's Whisper on the 66 `facts` questions spoken by Piper,
# clean and with noise over their end: `kame-desktop bench unclear`, README): a turn is not
# answered when its words average a segment log probability below UNCLEAR_LOGPROB or a word log
# probability below UNCLEAR_WORD_LOGPROB (a word probability of 0.5: clean speech ≥ 0.63), when
# Whisper thinks they may be no speech at all, or when the speech went on more than
# UNCLEAR_UNHEARD_S after the last word it wrote (noise covered the end of the question; clean
# speech: at most 0.3 s).
UNCLEAR_LOGPROB = -0.8
UNCLEAR_WORD_LOGPROB = -0.69
UNCLEAR_NO_SPEECH = 0.6
UNCLEAR_UNHEARD_S = 0.4
REPEAT_REPLY = "Sorry, I didn't catch that. Could you say it again?"


@dataclass(frozen=True)
class Heard:
    """How much the recognizer trusts a turn's words so far (word-weighted)."""

    text: str = ""
    words: int = 0
    logprob_sum: float = 0.0  # avg_logprob × words, over the words that had one
    scored: int = 0
    no_speech: float = 0.0
    unheard: float | None = None  # the speech after the last word, as the latest event that measured it says
    word_logprob_sum: float = 0.0  # word_logprob × words, over the words that had one
    word_scored: int = 0

    def add(self, event: AsrFinalEvent | AsrPartialEvent) -> Heard:
        n, text = word_count(event.text), f"{self.text} {event.text.strip()}".strip()
        unheard = self.unheard if event.unheard_s is None else event.unheard_s
        words = (self.word_logprob_sum, self.word_scored) if event.word_logprob is None or not n else (
            self.word_logprob_sum + event.word_logprob * n, self.word_scored + n)
        if event.avg_logprob is None or not n:
            return Heard(text, self.words + n, self.logprob_sum, self.scored, self.no_speech, unheard, *words)
        return Heard(text, self.words + n, self.logprob_sum + event.avg_logprob * n, self.scored + n,
                     max(self.no_speech, event.no_speech_prob or 0.0), unheard, *words)

    @property
    def avg_logprob(self) -> float | None:
        return round(self.logprob_sum / self.scored, 3) if self.scored else None

    @property
    def word_logprob(self) -> float | None:
        return round(self.word_logprob_sum / self.word_scored, 3) if self.word_scored else None


def understood(heard: Heard) -> bool:
    """False when the recognizer says the words are unreliable (one without scores is trusted)."""
    if heard.unheard is not None and heard.unheard > UNCLEAR_UNHEARD_S:
        return False
    if heard.word_scored and heard.word_logprob_sum / heard.word_scored < UNCLEAR_WORD_LOGPROB:
        return False
    if not heard.scored:
        return True
    return heard.logprob_sum / heard.scored >= UNCLEAR_LOGPROB and heard.no_speech < UNCLEAR_NO_SPEECH


MAX_TOOL_ROUNDS = 3  # rounds of tool calls in one answer; then it must answer in words
TOOL_BANNER_CHARS = 240  # of a failed call's reason, in the banner's one line


def tool_round_messages(said: str, calls: list[ToolCall], results: list[ToolResult]) -> list[Message]:
    """What the model is shown after its calls: its own turn with them, then each result
    (OpenAI's form). Calls a model wrote as text (small local models) get their results as a
    note in the user's turn instead: shown `tool` messages, Qwen2.5-0.5B only calls again
    (measured: 4 of 4 questions), with the note it answers in words (4 of 4)."""
    if any(c.written for c in calls):
        done = "; ".join(f"{c.shown()} → {r.text}" for c, r in zip(calls, results, strict=True))
        return [{"role": "assistant", "content": said or "(looking it up)"},
                {"role": "user", "content": f"(Tool result: {done}.) Now answer my question with it, in words."}]
    turn: Message = {"role": "assistant", "content": said, "tool_calls": [
        {"id": c.id or f"call_{n}", "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for n, c in enumerate(calls, 1)]}
    return [turn] + [{"role": "tool", "tool_call_id": c.id or f"call_{n}", "name": c.name, "content": r.text}
                     for n, (c, r) in enumerate(zip(calls, results, strict=True), 1)]


@dataclass(frozen=True)
class PolicyConfig:
    name: Policy = "reactive"
    poll_interval: float = 0.5
    min_new_words: int = 2
    max_starts: int = 5
    rate_window: float = 2.0
    debounce: float = 0.05
    max_backoff: float = 16.0
    max_streams: int = 3  # live streams at once where the provider overlaps them; 1: cancel at ask


def word_count(text: str) -> int:
    return len(text.split())


def words_changed(before: str, now: str) -> int:
    """How many of `now`'s words follow the part it shares with `before` (the reactive policy's
    new words). Not the growth in word count, which the reference counts from the longest partial
    seen: a first pass on a second of audio that repeats itself ("what is the law? What is the
    law", tiny.en) then held back every partial after it until they outgrew it, the whole
    question in bench lite's traces."""
    words = normalized_words(now)
    return len(words) - shared_prefix(normalized_words(before), words)


async def _aclose(stream: object) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception as e:  # closing is best effort: the answer is over either way
            log.debug("closing the LLM stream: %s", type(e).__name__)


# A word that ends a sentence: the next piece starts a word, so it need not wait for it (the
# lite voice starts on it). Not after a digit or another dot: "3." may go on as "3.14", "..."
# as a longer ellipsis. frontend/lite/sentences.py's first clause ends where this passes a word on.
_WORD_ENDS_SENTENCE = re.compile(r"(?:[!?]|(?<![\d.])\.)$")


class WordMerger:
    """Re-chunks streamed text into whole words, so each OracleText starts a word (SentencePiece
    gives every encoded text a word-start piece; the reference's per-delta encoding splits words
    the LLM streamed in pieces)."""

    def __init__(self) -> None:
        self._buffer = ""

    def push(self, chunk: str) -> str:
        self._buffer += chunk
        if _WORD_ENDS_SENTENCE.search(self._buffer):  # "Paris.": no later piece belongs to it
            words, self._buffer = self._buffer.strip(), ""
            return words
        cut = max(self._buffer.rfind(" "), self._buffer.rfind("\n"))
        if cut <= 0:
            return ""
        words, self._buffer = self._buffer[:cut], self._buffer[cut:]
        return words.strip()

    def flush(self) -> str:
        words, self._buffer = self._buffer.strip(), ""
        return words


class OracleManager:
    def __init__(
        self,
        llm: LlmProvider,
        post_signal: Callable[[Signal], bool],
        emit: Callable[[Event], None],
        *,
        policy: PolicyConfig | None = None,
        system_prompt: str = SYSTEM_PROMPT,
        merge_words: bool = True,
        clock: Callable[[], float] = time.monotonic,
        tools: TurnTools | None = None,
    ) -> None:
        self.llm = llm
        self.post_signal = post_signal
        self.emit = emit
        self.policy = policy or PolicyConfig()
        check_choice(self.policy.name, POLICIES, "policy")
        self.system_prompt = system_prompt
        self.merge_words = merge_words  # False = the reference: each delta stripped and sent alone
        check_choice(llm.dialogue, DIALOGUE_FORMATS, "dialogue format")
        self.clock = clock
        self.conversation = Conversation()
        self.request = 0
        self.streams: dict[int, asyncio.Task] = {}  # live requests, oldest first
        self.adopted = 0  # the request the front-end hears (0: none yet)
        self.overlap = llm.overlaps and self.policy.max_streams > 1
        self.tools = tools  # None or empty: the LLM is offered none
        self._final_waiters: list[tuple[int, asyncio.Future]] = []  # writes waiting for the turn's end
        self._tool_tokens: int | None = None
        self.notes: Callable[[], str] | None = None  # memory kept during the conversation (backend/memory.py)
        self._timer: asyncio.TimerHandle | None = None
        self._poller: asyncio.Task | None = None
        self._priming: asyncio.Task | None = None
        self._retry_delay = 0.0
        self._closed = False
        self._reset_state()

    def _reset_state(self) -> None:
        self._backing_off = False  # a retryable failure's retry is pending: it asks with the latest words
        self.pending = ""
        self.max_pending_words = 0
        self.committed_user_words = 0
        self.final_bump = False
        self.started_any = False
        self.total_at_last_start = 0
        self.asked_text = ""  # the user's words the latest request was asked with
        self.starts: deque[float] = deque(maxlen=10)
        self.heard = Heard()  # the open turn's final words
        self.heard_partial: AsrPartialEvent | None = None
        self._before_turn: list | None = None  # the transcript before the open turn (None: no turn open)

    # --- inputs (all on the loop thread) ----------------------------------------------------------

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.policy.name == "polling" and self._poller is None:
            self._poller = loop.create_task(self._poll_loop())
        tools = self.tools.schemas() if self.tools else None
        self._priming = loop.create_task(self.llm.prime(self.system_prompt, tools))  # local models read it now

    def tools_changed(self) -> None:
        """The tools offered changed (an MCP server came or went): they are counted again, and a
        local model reads the prompt that lists them now rather than at the next request."""
        self._tool_tokens = None
        if self._closed or self.llm.overlaps:
            return
        before = self._priming

        async def prime() -> None:
            if before is not None:
                await asyncio.gather(before, return_exceptions=True)
            await self.llm.prime(self.system_prompt, self.tools.schemas() if self.tools else None)

        self._priming = asyncio.get_running_loop().create_task(prime())

    def on_asr(self, event: Event) -> None:
        self._track_turn(event)
        if isinstance(event, AsrPartialEvent | AsrFinalEvent) and event.text.strip() and self._before_turn is None:
            self._before_turn = list(self.conversation.lines)  # a new turn opens
        if isinstance(event, TurnEndEvent) and self._before_turn is not None:
            heard, self.heard, self.heard_partial = self.heard, Heard(), None
            before, self._before_turn = self._before_turn, None
            if not understood(heard):
                self._ask_to_repeat(heard, before)
                return
        if isinstance(event, AsrPartialEvent):
            self.heard_partial = event if event.text.strip() else None
            self.pending = event.text
            self.max_pending_words = max(self.max_pending_words, word_count(event.text))
            if event.pause and self.policy.name == "reactive":
                self._ask_at_pause()
                return
        elif isinstance(event, AsrFinalEvent):
            self.heard = self.heard.add(event)
            self.conversation.add(USER, event.text.strip())
            self.committed_user_words += word_count(event.text)
            self.pending = ""
            self.max_pending_words = 0
            # Reactive: a final that only confirms what the running request was asked with is no
            # reason to ask again (the polling reference always re-asks).
            self.final_bump = self.policy.name == "polling" or not self._request_is_current()
        elif isinstance(event, TurnEndEvent) and self.policy.name == "end_of_turn":
            self.final_bump = not self._request_is_current()
            self._schedule_decision(0.0)
            return
        else:
            return
        if self.policy.name == "reactive" and self._wants_start(self.final_bump):
            self._schedule_decision(self.policy.debounce)

    def _ask_at_pause(self) -> None:
        """The user pauses, and these may be the turn's last words: ask with them now (a turn
        that ends here plays this answer with no further request), unless the running request
        already has them."""
        if self._closed or not self._user_text().strip() or self._request_is_current() or self._backing_off:
            return
        if self._timer:
            self._timer.cancel()
            self._timer = None
        self.final_bump = False
        self._start()

    def turn_understood(self) -> bool:
        """Whether the open turn's words so far (finals and the latest partial) are trusted."""
        return understood(self.heard.add(self.heard_partial) if self.heard_partial else self.heard)

    def _ask_to_repeat(self, heard: Heard, before: list) -> None:
        """The turn's words are unreliable: the front-end hears a request to repeat as the
        answer, nothing the LLM said about them, and the LLM never sees them."""
        if self._timer:
            self._timer.cancel()
            self._timer = None
        self._cancel_streams("not understood")
        self.conversation.lines[:] = before
        self.pending, self.max_pending_words, self.final_bump = "", 0, False
        request = self.request + 1
        self.emit(AsrUnclearEvent(request, heard.text, REPEAT_REPLY, heard.avg_logprob, round(heard.no_speech, 3),
                                  heard.unheard, heard.word_logprob))
        self._say(REPEAT_REPLY)

    def _user_text(self) -> str:
        return self.conversation.render(self.pending)

    def _request_is_current(self) -> bool:
        return self.started_any and normalized_words(self._user_text()) == normalized_words(self.asked_text)

    def answer_request(self) -> int | None:
        """The request whose answer fits what the user has said so far: the running one, or the
        next one when a decision to ask again is pending."""
        if self._timer is not None or self.final_bump or not self.started_any:
            return self.request + 1
        return self.request

    def on_companion_text(self, text: str) -> None:
        """What the companion actually said (KAME pieces with their spaces, lite words)."""
        self.conversation.add(ASSISTANT, text)

    def new_conversation(self) -> None:
        self._cancel_streams("new conversation")
        for _, future in self._final_waiters:
            future.cancel()
        self._final_waiters.clear()
        if self.tools is not None:
            self.tools.new_turn()
        if self._timer:
            self._timer.cancel()
            self._timer = None
        self.conversation.clear()
        self._reset_state()

    async def close(self) -> None:
        self._closed = True  # late ASR events and pending retries must not start new requests
        if self._poller:
            self._poller.cancel()
        if self._priming:
            await asyncio.gather(self._priming, return_exceptions=True)
        tasks = list(self.streams.values())
        self.new_conversation()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- decisions --------------------------------------------------------------------------------

    def total_words(self) -> int:
        """User words so far (Moshi's own speech never triggers a restart)."""
        return self.committed_user_words + max(word_count(self.pending), self.max_pending_words)

    def _wants_start(self, bump: bool) -> bool:
        if self.policy.name == "end_of_turn":
            return bump
        if not self.started_any:
            return bool(self.pending.strip()) or bump
        if self.policy.name == "reactive":
            return words_changed(self.asked_text, self._user_text()) >= self.policy.min_new_words or bump
        return self.total_words() - self.total_at_last_start >= self.policy.min_new_words or bump

    def _rate_limited_until(self, now: float) -> float | None:
        while self.starts and now - self.starts[0] >= self.policy.rate_window:
            self.starts.popleft()
        if len(self.starts) < self.policy.max_starts:
            return None
        return self.starts[0] + self.policy.rate_window

    async def _poll_loop(self) -> None:
        while True:
            await asyncio.sleep(self.policy.poll_interval)
            bump, self.final_bump = self.final_bump, False
            if self._wants_start(bump) and self._rate_limited_until(self.clock()) is None:
                self._start()

    def _schedule_decision(self, delay: float) -> None:
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(delay, self._decide)

    def _decide(self) -> None:
        self._timer = None
        if self._backing_off or not self._wants_start(self.final_bump):
            return
        until = self._rate_limited_until(self.clock())
        if until is not None:
            self._schedule_decision(max(0.0, until - self.clock()) + 0.001)
            return
        self.final_bump = False
        self._start()

    # --- requests ---------------------------------------------------------------------------------

    def _cancel(self, request: int, reason: str) -> None:
        task = self.streams.pop(request, None)
        if task is not None:
            if task is not asyncio.current_task():  # a stream stopping itself raises instead
                task.cancel()
            self.emit(LlmCancelledEvent(request, reason))

    def _cancel_streams(self, reason: str, below: int | None = None, keep: frozenset[int] = frozenset()) -> None:
        """Cancel the live streams (those older than `below`, if given), except `keep`."""
        for request in [r for r in self.streams if (below is None or r < below) and r not in keep]:
            self._cancel(request, reason)

    def _limit_streams(self) -> None:
        """At most `max_streams` live: the adopted one and the newest that have not spoken stay."""
        waiting = [r for r in self.streams if r != self.adopted]
        room = self.policy.max_streams - (self.adopted in self.streams)
        if len(waiting) > room:
            self._cancel_streams("stream limit", keep=frozenset(waiting[len(waiting) - room :]) | {self.adopted})

    def _adopt(self, request: int, started: float) -> bool:
        """`request` has sent its first text: the front-end hears it from now on, and every older
        stream stops. False when a newer one already speaks: this one is stale and stops."""
        if request < self.adopted:
            self._cancel(request, "older than the adopted answer")
            return False
        self.adopted = request
        self._cancel_streams("superseded", below=request)
        self.emit(LlmAdoptedEvent(request, round((time.monotonic() - started) * 1000, 1)))
        return True

    def _messages(self) -> list[Message]:
        count = self.llm.count_tokens
        if self._tool_tokens is None:  # the template lists the tools with the system prompt
            self._tool_tokens = count(json.dumps(self.tools.schemas())) if self.tools else 0
        note = self.notes() if self.notes else ""
        budget = (self.llm.context_tokens - count(self.system_prompt) - self._tool_tokens - ANSWER_TOKENS
                  - 2 * MESSAGE_TOKENS - (count(note) if note else 0))
        turns = self.conversation.window(self.pending, count, budget)
        return with_note(build_messages(self.system_prompt, turns, count, budget, self.llm.dialogue), note)

    def _start(self) -> None:
        if self._closed:
            return
        if not self.overlap:
            self._cancel_streams("superseded")
        self.request += 1
        self.starts.append(self.clock())
        self.started_any = True
        self.total_at_last_start = self.total_words()
        self.asked_text = self._user_text()
        self.emit(LlmRequestEvent(self.request, self.policy.name, self.total_at_last_start))
        task = asyncio.get_running_loop().create_task(self._stream(self.request, self._messages()))
        self.streams[self.request] = task
        task.add_done_callback(lambda _, request=self.request: self._forget(request, task))
        self._limit_streams()

    def _forget(self, request: int, task: asyncio.Task) -> None:
        if self.streams.get(request) is task:
            del self.streams[request]

    async def _stream(self, request: int, messages: list[Message]) -> None:
        started = time.monotonic()
        merger = WordMerger() if self.merge_words else None
        cleaner = ReplyCleaner()
        first = True  # no oracle text sent yet
        timed = False  # llm_first_chunk emitted

        def send(text: str) -> None:
            nonlocal first
            if not text:
                return
            if request != self.adopted:  # a newer answer was adopted meanwhile
                return
            if first:  # the reset goes out with the first text, not with the request
                self.post_signal(OracleReset(request))
                first = False
            self.post_signal(OracleText(request, text))

        taken = 0  # characters of this answer passed on
        reason = "stop"
        stream = None
        try:
            # One answer, in rounds: each round's tool calls run, their results go back to the
            # model and the answer streams on (the last round offers no tools: it must answer).
            offer = bool(self.tools)
            for round_ in range(MAX_TOOL_ROUNDS + 1):
                offered = self.tools.schemas() if self.tools and offer and round_ < MAX_TOOL_ROUNDS else None
                calls: list[ToolCall] = []
                said = ""  # this round's text, which the model is shown with its calls
                stream = self.llm.stream(messages, offered)
                async for chunk in stream:
                    if isinstance(chunk, ToolCall):
                        calls.append(chunk)
                        continue
                    if not chunk:
                        continue
                    if taken + len(chunk) > MAX_ANSWER_CHARS:  # a runaway answer: keep what a reply can use
                        chunk, reason = chunk[: MAX_ANSWER_CHARS - taken], "length"
                    taken += len(chunk)
                    said += chunk
                    if not timed and chunk.strip():
                        timed = True
                        if not self._adopt(request, started):
                            raise asyncio.CancelledError  # stale: a newer answer already speaks
                        self.emit(LlmFirstChunkEvent(request, round((time.monotonic() - started) * 1000, 1)))
                    if chunk:
                        self.emit(LlmChunkEvent(request, chunk))  # the timeline keeps what the LLM said
                        clean = cleaner.push(chunk)
                        send(merger.push(clean) if merger else clean.strip())
                    if cleaner.ended:  # it went on to write the user's turn
                        break
                    if reason == "length":
                        self.emit(ErrorEvent("llm", TOO_LONG, "bad_server"))
                        break
                if cleaner.ended or reason == "length":
                    await _aclose(stream)  # drop the connection (or stop the model) now
                if not calls or cleaner.ended or reason == "length" or offered is None:
                    break
                await _aclose(stream)  # this round's, before the next one asks
                results = await self._call_tools(request, calls)
                if results is None:  # it would act on words the user did not end the turn with
                    self._cancel(request, "asked to act before the turn's final words")
                    return
                messages = [*messages, *tool_round_messages(said, calls, results)]
                offer = not any(c.written for c in calls)  # a model that writes its calls answers better without
                if said and not said[-1].isspace():  # the next round's first word is a word of its own
                    clean = cleaner.push(" ")
                    send(merger.push(clean) if merger else clean.strip())
            clean = cleaner.flush()
            if merger:
                send(merger.push(clean))
                send(merger.flush())
            else:
                send(clean.strip())
            self.post_signal(OracleDone(request))
            self._retry_delay, self._backing_off = 0.0, False
            self.emit(LlmDoneEvent(request, reason))
        except asyncio.CancelledError:
            raise
        except LlmError as e:
            self._failed(request, str(e), e.retryable, e.kind)
        except Exception as e:  # a provider bug must not take the back-end down
            log.exception("LLM stream failed")
            self._failed(request, f"unexpected LLM failure: {e}", True, "failed")
        finally:
            if stream is not None:
                await _aclose(stream)  # at once, also when cancelled: not whenever it is collected

    # --- tools ------------------------------------------------------------------------------------

    async def _call_tools(self, request: int, calls: list[ToolCall]) -> list[ToolResult] | None:
        """Run a round's calls (the rule in TurnTools); None when a write turned out not to be
        asked with the turn's final words: the request then acts on nothing."""
        assert self.tools is not None
        results = []
        for call in calls:
            self.emit(ToolCallEvent(request, call.name, call.arguments))
            result = await self.tools.call(call, lambda: self._final_words(request))
            if result is None:
                self.emit(ToolResultEvent(request, call.name, False, "not done: the user's words changed"))
                return None
            self.emit(ToolResultEvent(request, call.name, result.ok, result.summary))
            if not result.ok:  # the model reads why; the user gets one line (a server's may be a page)
                line = " ".join(f"{call.shown()}: {result.text.removeprefix('error: ')}".split())
                self.emit(ErrorEvent("tool", line if len(line) <= TOOL_BANNER_CHARS else line[: TOOL_BANNER_CHARS - 1] + "…",
                                     "failed"))
            results.append(result)
        return results

    async def _final_words(self, request: int) -> bool:
        """Whether `request` was asked with the turn's final words: known once the turn has
        ended (until then this waits; a request superseded meanwhile is cancelled)."""
        if self._before_turn is not None:  # the turn is still open
            future = asyncio.get_running_loop().create_future()
            self._final_waiters.append((request, future))
            return await future
        return request == self.request and self._request_is_current()

    def _settle_final_waiters(self) -> None:
        """The turn ended: a request waiting to act may, if it was asked with all its words."""
        for request, future in self._final_waiters:
            if not future.done():
                future.set_result(request == self.request and self._request_is_current())
        self._final_waiters.clear()

    def busy(self) -> bool:
        """The user is talking, or an answer is on its way."""
        return self._before_turn is not None or bool(self.streams)

    def announce(self, text: str) -> None:
        """Say `text` now (a timer that fell due), as an answer of its own with no LLM: the
        front-end hears it as it hears answers (lite speaks it, KAME is steered by it)."""
        self.emit(AnnouncementEvent(self.request + 1, text))
        self.post_signal(TurnEnded("timer", self._say(text)))

    def _say(self, text: str) -> int:
        """`text` as the answer of a request of its own (nothing asked of the LLM)."""
        self.request += 1
        self.adopted = request = self.request
        self.started_any = True
        self.total_at_last_start = self.total_words()
        self.asked_text = self._user_text()
        self.post_signal(OracleReset(request))
        self.post_signal(OracleText(request, text))
        self.post_signal(OracleDone(request))
        return request

    def _track_turn(self, event: Event) -> None:
        """Tool results are cached per turn; writes wait for the turn's end."""
        opens = isinstance(event, AsrPartialEvent | AsrFinalEvent) and event.text.strip()
        if opens and self._before_turn is None and self.tools is not None:
            self.tools.new_turn()
        elif isinstance(event, TurnEndEvent):
            self._settle_final_waiters()

    def _failed(self, request: int, message: str, retryable: bool, kind: str) -> None:
        if any(r > request for r in self.streams):
            # A newer answer is on its way (a server that serves one stream at a time ends the
            # running one when the next arrives): this one is superseded, not a failure to report.
            self.emit(LlmCancelledEvent(request, f"superseded ({message})"))
            return
        self.emit(ErrorEvent("llm", message, kind))
        self.emit(LlmDoneEvent(request, "error"))
        self.post_signal(OracleDone(request))  # what arrived is all there will be
        if retryable and request == self.request:
            # Until the retry, words heard ask nothing (a rate-limited server is not asked again
            # at every partial, each failure doubling the wait): the retry asks with all of them.
            self._backing_off = True
            self._retry_delay = min(self.policy.max_backoff, max(1.0, self._retry_delay * 2))
            asyncio.get_running_loop().call_later(self._retry_delay, self._retry, request)

    def _retry(self, request: int) -> None:
        self._backing_off = False
        if request == self.request and self._rate_limited_until(self.clock()) is None:
            self.final_bump = False
            self._start()  # nothing newer was asked meanwhile: ask again with what we have now
