"""OracleManager policies on scripted, timestamped ASR events (spec §3.3), run in real time on an
asyncio loop. The LLM is a scripted provider: what is under test is when the manager asks, cancels
and how it turns the answer into oracle signals."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import pytest
from fixtures.llm import ScriptedLlm

from kame_desktop.backend.oracle_manager import OracleManager, PolicyConfig, WordMerger, words_changed
from kame_desktop.backend.tools.base import Tool, ToolCall, TurnTools, object_schema
from kame_desktop.errors import LlmError
from kame_desktop.events import (
    AsrFinalEvent,
    AsrPartialEvent,
    ErrorEvent,
    LlmAdoptedEvent,
    LlmCancelledEvent,
    LlmChunkEvent,
    LlmDoneEvent,
    LlmFirstChunkEvent,
    LlmRequestEvent,
    OracleDone,
    OracleReset,
    OracleText,
    ToolCallEvent,
    ToolResultEvent,
    TurnEndEvent,
)


@dataclass
class Recorder:
    t0: float = field(default_factory=time.monotonic)
    events: list[tuple[float, object]] = field(default_factory=list)
    signals: list[tuple[float, object]] = field(default_factory=list)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def emit(self, event) -> None:
        self.events.append((self.now(), event))

    def post(self, signal) -> bool:
        self.signals.append((self.now(), signal))
        return True

    def of(self, kind) -> list[tuple[float, object]]:
        return [(t, e) for t, e in self.events if isinstance(e, kind)]


async def drive(manager: OracleManager, rec: Recorder, script: list[tuple[float, object]], until: float) -> None:
    manager.start()
    for t, event in script:
        await asyncio.sleep(max(0.0, t - rec.now()))
        manager.on_asr(event)
    await asyncio.sleep(max(0.0, until - rec.now()))
    await manager.close()


def run(policy: str, script, until: float, llm=None, **config) -> tuple[Recorder, OracleManager, ScriptedLlm]:
    llm = llm or ScriptedLlm()
    rec = Recorder()

    async def main():
        rec.t0 = time.monotonic()
        manager = OracleManager(llm, rec.post, rec.emit, policy=PolicyConfig(name=policy, **config))
        await drive(manager, rec, script, until)
        return manager

    manager = asyncio.run(main())
    return rec, manager, llm


def partial(text):
    return AsrPartialEvent(text)


def final(text):
    return AsrFinalEvent(text)


QUESTION = [
    (0.10, partial("what is")),
    (0.30, partial("what is the")),
    (0.70, partial("what is the capital of")),
    (1.30, final("what is the capital of France")),
]


def test_polling_asks_on_its_ticks_and_cancels_the_stale_stream():
    rec, _, llm = run("polling", QUESTION, until=2.8)
    requests = rec.of(LlmRequestEvent)
    # Ticks at 0.5 (first text), 1.0 (+2 words), 1.5 (the final); 2.0: nothing new.
    assert [e.word_count for _, e in requests] == [3, 5, 6]
    for (t, _), tick in zip(requests, (0.5, 1.0, 1.5), strict=True):
        assert tick - 0.02 <= t <= tick + 0.15
    cancelled = [e.request for _, e in rec.of(LlmCancelledEvent)]
    assert cancelled == [1, 2]  # each was still streaming (0.3 s per chunk) when superseded
    assert [e.request for _, e in rec.of(LlmDoneEvent)] == [3]
    # The last request saw the committed question, as the user's turn after the system prompt.
    assert llm.prompts[-1][1:] == [{"role": "user", "content": "What is the capital of France"}]


def test_polling_needs_two_new_words():
    script = [(0.1, partial("what is")), (0.6, partial("what is the"))]
    rec, _, _ = run("polling", script, until=1.7)
    assert [e.word_count for _, e in rec.of(LlmRequestEvent)] == [2]  # +1 word never re-asks


def test_reactive_asks_within_100_ms_of_the_qualifying_event():
    rec, _, _ = run("reactive", QUESTION, until=2.0)
    requests = rec.of(LlmRequestEvent)
    # 0.10: first text; 0.30: only +1 word; 0.70: +2 words; 1.30: the final.
    assert [e.word_count for _, e in requests] == [2, 5, 6]
    for (t, _), event_t in zip(requests, (0.10, 0.70, 1.30), strict=True):
        assert event_t <= t <= event_t + 0.1


def test_reactive_counts_the_words_changed_since_the_ask_not_the_longest_partial():
    """tiny.en's first pass on a second of audio may repeat itself; the partials after it are
    shorter but new, and each one with two new words is asked (the reference's count, from the
    longest partial, held them all back: bench lite's traces)."""
    script = [(0.05, partial("what is the law? What is the law")), (0.4, partial("What is the largest plan?")),
              (0.8, partial("What is the largest planet in a")), (1.2, partial("What is the largest planet in our"))]
    rec, _, llm = run("reactive", script, until=1.6)
    assert [e.word_count for _, e in rec.of(LlmRequestEvent)] == [8, 8, 8]  # the count only grows: the words changed
    assert [p[-1]["content"] for p in llm.prompts] == [
        "What is the law? What is the law", "What is the largest plan?", "What is the largest planet in a"]
    # "in a" → "in our": one word changed, not asked (it would be, at the pause)
    assert words_changed("What is the largest planet in a", "What is the largest planet in our") == 1
    assert words_changed("what is the?", "What is the largest planet") == 2  # case and punctuation are no change


@pytest.mark.parametrize("policy", ["reactive", "polling"])
def test_rate_limit_five_starts_in_any_two_seconds(policy):
    script = [(0.05 + 0.11 * i, final(f"word{i} more")) for i in range(20)]  # a final every 110 ms
    rec, _, _ = run(policy, script, until=4.0, poll_interval=0.1)
    times = [t for t, _ in rec.of(LlmRequestEvent)]
    assert len(times) >= 6
    for i in range(len(times) - 5):
        assert times[i + 5] - times[i] >= 2.0 - 0.01
    if policy == "reactive":  # the sixth waits for the window to free, then goes at once
        assert times[5] - (times[0] + 2.0) < 0.1


def test_answer_becomes_reset_then_whole_words_and_first_chunk_is_timed():
    rec, _, _ = run("reactive", [(0.05, final("what is the capital of France"))], until=1.5)
    signals = [s for _, s in rec.signals]
    assert signals[0] == OracleReset(1)
    assert [s.text for s in signals[1:-1]] == ["The", "capital of", "France is Paris."]  # a sentence end goes at once
    assert all(isinstance(s, OracleText) and s.request == 1 for s in signals[1:-1])
    assert signals[-1] == OracleDone(1)  # the answer is complete
    (t_first, first), = rec.of(LlmFirstChunkEvent)
    assert 250 <= first.ttft_ms <= 450
    assert rec.signals[0][0] >= t_first  # the reset goes out with the first text, not the request


def test_reference_mode_sends_each_delta_stripped():
    llm = ScriptedLlm(delay=0.05)
    rec = Recorder()

    async def main():
        manager = OracleManager(llm, rec.post, rec.emit, merge_words=False)
        await drive(manager, rec, [(0.0, final("hello there"))], until=0.5)

    asyncio.run(main())
    assert [s.text for _, s in rec.signals[1:-1]] == ["The capital", "of Fra", "nce is Paris."]


def test_word_merger_keeps_words_whole():
    merger = WordMerger()
    assert [merger.push(c) for c in ("Par", "is is", " the cap", "ital")] == ["", "Paris", "is the", ""]
    assert merger.flush() == "capital"


def test_word_merger_passes_on_a_word_that_ends_a_sentence_at_once():
    """The answer's first sentence reaches the front-end with its last token, not one token (or
    the end of the answer) later; a full stop after a digit may still go on ("3." → "3.14")."""
    merger = WordMerger()
    assert [merger.push(c) for c in ("The", " capital", " is", " Paris", ".")] == ["", "The", "capital", "is", "Paris."]
    assert [merger.push(c) for c in (" Is", " it", "?")] == ["", "Is", "it?"]
    assert [merger.push(c) for c in (" Pi", " is", " 3", ".", "14")] == ["", "Pi", "is", "", ""]
    assert merger.flush() == "3.14"
    assert [merger.push(c) for c in (" the", " U", ".S", ".")] == ["", "the", "", "U.S."]
    assert merger.push(" Well") == "" and merger.push("...") == "" and merger.flush() == "Well..."


def test_retryable_failure_is_reported_and_asked_again_with_backoff():
    llm = ScriptedLlm(error=LlmError("LLM server unreachable at http://127.0.0.1:9 — start it", retryable=True))
    rec, _, _ = run("reactive", [(0.05, final("hello there"))], until=1.6, llm=llm)
    errors = rec.of(ErrorEvent)
    assert errors and "unreachable" in errors[0][1].message and errors[0][1].source == "llm"
    requests = [t for t, _ in rec.of(LlmRequestEvent)]
    assert len(requests) == 2 and 0.95 <= requests[1] - requests[0] <= 1.2  # first back-off: 1 s
    # No oracle text reached the front-end (it keeps running on PAD), only "that answer is over".
    assert [s for _, s in rec.signals] == [OracleDone(1), OracleDone(2)]


def test_words_heard_while_backing_off_ask_nothing_until_the_retry_asks_with_them():
    """A rate-limited (or unreachable) server is not asked again at every partial, each failure
    doubling the wait: the retry asks with everything heard meanwhile."""
    llm = ScriptedLlm(error=LlmError("rate-limited by the LLM server (429)", retryable=True))
    script = [(0.05, final("hello there")), (0.3, partial("how are you doing today")),
              (0.5, partial("how are you doing today, my friend?"))]
    rec, _, llm = run("reactive", script, until=1.6, llm=llm)
    requests = [t for t, _ in rec.of(LlmRequestEvent)]
    assert len(requests) == 2 and 0.95 <= requests[1] - requests[0] <= 1.2, requests  # the retry, at 1 s
    assert llm.prompts[-1][-1]["content"].endswith("how are you doing today, my friend?")


def test_non_retryable_failure_is_not_retried():
    llm = ScriptedLlm(error=LlmError("the LLM server refused the API key (401)", retryable=False))
    rec, _, _ = run("reactive", [(0.05, final("hello there"))], until=1.5, llm=llm)
    assert len(rec.of(LlmRequestEvent)) == 1 and len(rec.of(ErrorEvent)) == 1


def test_history_holds_the_companions_words_and_new_conversation_clears_it():
    llm = ScriptedLlm(delay=0.01)
    rec = Recorder()

    async def main():
        manager = OracleManager(llm, rec.post, rec.emit)
        manager.on_asr(final("hi there"))
        manager.on_companion_text(" Hel")
        manager.on_companion_text("lo friend")
        manager.on_asr(partial("how are"))
        await asyncio.sleep(0.2)
        dialogue = llm.prompts[-1][1:]
        manager.new_conversation()
        assert manager.total_words() == 0 and not manager.conversation.lines
        await manager.close()
        return dialogue

    dialogue = asyncio.run(main())
    assert dialogue == [
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello friend"},
        {"role": "user", "content": "How are"},
    ]


def test_history_is_trimmed_to_the_context():
    llm = ScriptedLlm(delay=0.01, context_tokens=400)
    rec = Recorder()

    async def main():
        manager = OracleManager(llm, rec.post, rec.emit)
        for i in range(60):
            manager.conversation.add("user" if i % 2 == 0 else "kame", f"line {i} " + "word " * 10)
        manager.on_asr(final("latest question here"))
        await asyncio.sleep(0.1)
        await manager.close()

    asyncio.run(main())
    dialogue = llm.prompts[-1][1:]
    budget = 400 - llm.count_tokens(llm.prompts[-1][0]["content"]) - 128
    assert sum(llm.count_tokens(m["content"]) for m in dialogue) <= budget
    assert dialogue[-1]["content"].endswith("Latest question here")
    assert not any("line 0 " in m["content"] for m in dialogue)


def test_reactive_final_that_only_confirms_the_asked_words_does_not_re_ask():
    script = [(0.05, partial("what is the capital of France")), (0.5, final("What is the capital of France?"))]
    rec, manager, _ = run("reactive", script, until=1.0)
    assert [e.word_count for _, e in rec.of(LlmRequestEvent)] == [6]


def test_the_pause_pass_is_asked_at_once_past_the_word_count_the_debounce_and_the_rate_limit():
    """A partial marked `pause` (the user is silent: maybe the turn's last words) is asked the
    moment it arrives, though it adds one word and five requests already went out this second."""
    script = [(0.05 + 0.1 * i, final(f"w{i} x")) for i in range(5)]  # five requests: the window is full
    script += [(0.60, partial("one")), (0.62, AsrPartialEvent("one", pause=True))]
    rec, _, _ = run("reactive", script, until=1.2)
    requests = rec.of(LlmRequestEvent)
    assert len(requests) == 6, [e.word_count for _, e in requests]
    assert 0.62 <= requests[-1][0] <= 0.62 + 0.3  # not when the window frees (after 2 s)
    assert requests[-1][1].word_count == 11


def turn_after_a_pause(heard: list[tuple[float, object]], final_words: str) -> tuple[Recorder, int | None]:
    """`heard` (seconds to wait after each event), then the turn ends on `final_words`: the
    events recorded, and the request the front-end is told is the answer."""
    rec = Recorder()

    async def main():
        manager = OracleManager(ScriptedLlm(delay=0.05), rec.post, rec.emit, policy=PolicyConfig(name="reactive"))
        manager.start()
        for wait, event in heard:
            manager.on_asr(event)
            await asyncio.sleep(wait)
        manager.on_asr(final(final_words))
        manager.on_asr(TurnEndEvent("vad"))
        answer = manager.answer_request()
        await asyncio.sleep(0.4)
        await manager.close()
        return answer

    return rec, asyncio.run(main())


def test_a_turn_whose_final_words_are_the_pause_pass_words_asks_nothing_more_and_names_that_answer():
    rec, answer = turn_after_a_pause([(0.15, partial("what is the capital")),
                                      (0.15, AsrPartialEvent("what is the capital of France?", pause=True))],
                                     "What is the capital of France")
    assert [e.request for _, e in rec.of(LlmRequestEvent)] == [1, 2] and answer == 2  # the pause pass's request
    assert [e.request for _, e in rec.of(LlmDoneEvent)] == [2]


def test_a_turn_whose_final_words_differ_from_the_pause_pass_asks_again_and_names_the_new_answer():
    # The user went on after the pause.
    rec, answer = turn_after_a_pause([(0.1, AsrPartialEvent("what is the capital", pause=True))],
                                     "what is the capital of France")
    assert [e.word_count for _, e in rec.of(LlmRequestEvent)] == [4, 6] and answer == 2


def test_end_of_turn_policy_asks_only_when_the_turn_ends_and_names_the_answer():
    llm = ScriptedLlm(delay=0.05)
    rec = Recorder()

    async def main():
        manager = OracleManager(llm, rec.post, rec.emit, policy=PolicyConfig(name="end_of_turn"))
        manager.start()
        manager.on_asr(partial("what is the capital"))
        manager.on_asr(final("what is the capital of France"))
        await asyncio.sleep(0.2)
        asked_before_turn_end = len(rec.of(LlmRequestEvent))
        manager.on_asr(TurnEndEvent("vad"))
        answer = manager.answer_request()
        await asyncio.sleep(0.3)
        await manager.close()
        return asked_before_turn_end, answer

    asked_before, answer = asyncio.run(main())
    assert asked_before == 0
    assert [e.request for _, e in rec.of(LlmRequestEvent)] == [1] and answer == 1


def test_one_huge_chunk_is_capped_with_one_error_and_the_frame_step_stays_bounded(stub_llm_server, tmp_path, monkeypatch):
    # A server answering one 10 MB chunk: before, all of it reached the front-end (a lite frame
    # step re-split it every frame: 0.3 s against the 80 ms budget) and a 10 MB timeline line.
    import json

    import numpy as np

    import kame_desktop.frontend.lite.engine as engine
    from kame_desktop.backend.llm.openai_compat import OpenAiLlm
    from kame_desktop.events import FRAME_SIZE, LlmChunkEvent, Stamped, TimelineWriter, TurnEnded
    from kame_desktop.frontend.lite.engine import LiteFrontEnd

    stub = stub_llm_server("huge")
    llm = OpenAiLlm(stub.url, "stub")
    llm.first_chunk_timeout, llm.chunk_timeout = 120.0, 60.0  # a busy machine parses 10 MB slowly
    rec = Recorder()
    timeline = TimelineWriter(tmp_path / "timeline.jsonl", api_key="")

    def emit(event) -> None:
        rec.emit(event)
        timeline(Stamped(0, event))

    async def main() -> None:
        manager = OracleManager(llm, rec.post, emit)
        manager.on_asr(final("tell me everything"))
        for _ in range(1200):  # up to 60 s on a slow machine
            await asyncio.sleep(0.05)
            if rec.of(LlmDoneEvent):
                break
        await manager.close()
        await llm.aclose()

    asyncio.run(main())
    timeline.close()
    texts = [s.text for _, s in rec.signals if isinstance(s, OracleText)]
    assert 0 < sum(len(t) for t in texts) <= 4000  # the front-end gets at most 4,000 characters
    assert sum(len(e.text) for _, e in rec.of(LlmChunkEvent)) <= 4000
    errors = rec.of(ErrorEvent)
    assert len(errors) == 1 and "4,000 characters" in errors[0][1].message
    assert [e.reason for _, e in rec.of(LlmDoneEvent)] == ["length"]
    lines = (tmp_path / "timeline.jsonl").read_bytes().splitlines()
    assert lines and max(len(line) for line in lines) <= 64 * 1024
    assert json.loads(lines[-1])["kind"] == "llm_done"

    # The lite front-end speaks it; each frame step splits a bounded amount of text.
    scanned: list[int] = []
    real = engine.split_ready
    monkeypatch.setattr(engine, "split_ready", lambda text, *a, **k: scanned.append(len(text)) or real(text, *a, **k))

    class Voice:
        name = "stub"

        def synthesize(self, text: str) -> np.ndarray:
            return np.full(FRAME_SIZE // 8, 0.1, dtype=np.float32)

    frontend = LiteFrontEnd(Voice(), barge_in=False)
    try:
        signals = [s for _, s in rec.signals] + [TurnEnded("vad", 1)]
        frontend.step(np.zeros(FRAME_SIZE, dtype=np.float32), signals)
        for _ in range(20):
            frontend.step(np.zeros(FRAME_SIZE, dtype=np.float32))
    finally:
        frontend.close()
    assert scanned and max(scanned) <= engine.SCAN_CHARS


# --- overlapping answers, adopted on their first text (spec §3.3b), against a scripted server ---


@pytest.fixture
def scripted_run(scripted_llm):
    """run(script, until, delays, server_options=None, **config): reactive with a real OpenAiLlm
    against the scripted OpenAI-compatible server (request n's first token after delays[n-1] s,
    then "Answer n: …" at 40 words/s) → (recorder, manager, server, tasks left after close)."""
    from kame_desktop.backend.llm.openai_compat import OpenAiLlm

    def run_scripted(script, until, delays, server_options=None, **config):
        server = scripted_llm(delays=delays, **(server_options or {}))
        llm = OpenAiLlm(server.url, "scripted")
        llm.load()  # the client library's import (a second on a slow machine) is not the answer's time
        rec = Recorder()

        async def main():
            rec.t0 = time.monotonic()
            manager = OracleManager(llm, rec.post, rec.emit, policy=PolicyConfig(name="reactive", **config))
            await drive(manager, rec, script, until)
            left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            await llm.aclose()
            return manager, left

        manager, left = asyncio.run(main())
        return rec, manager, server, left

    return run_scripted


def heard_requests(rec: Recorder) -> list[int]:
    """The requests whose text reached the front-end, in order, without repeats."""
    heard: list[int] = []
    for _, s in rec.signals:
        if isinstance(s, (OracleReset, OracleText)) and s.request not in heard:
            heard.append(s.request)
    return heard


TWO_ASKS = [(0.1, partial("what is")), (0.6, partial("what is the capital of"))]


def test_a_newer_answer_that_speaks_first_is_adopted_and_the_older_cancelled(scripted_run):
    # Request 1 (asked at 0.1 s) would speak at 2.1 s; request 2 (at 0.6 s) speaks at 0.7 s.
    rec, manager, server, _ = scripted_run(TWO_ASKS, until=2.0, delays=[2.0, 0.1])
    assert [e.request for _, e in rec.of(LlmRequestEvent)] == [1, 2]
    cancels = [(e.request, e.reason) for _, e in rec.of(LlmCancelledEvent)]
    assert cancels[0] == (1, "superseded")  # at 2's adoption, not at its request
    (t_cancel, _), (t_request2, _) = rec.of(LlmCancelledEvent)[0], rec.of(LlmRequestEvent)[1]
    assert t_cancel > t_request2 + 0.05
    (_, adopted), = rec.of(LlmAdoptedEvent)
    assert adopted.request == 2 and adopted.after_ms >= 90
    assert heard_requests(rec) == [2] and rec.signals[0][1] == OracleReset(2)
    assert " ".join(s.text for _, s in rec.signals if isinstance(s, OracleText)).startswith("Answer 2:")
    assert server.requests[0].words_sent == 0  # the server never got to request 1's answer


def test_cancel_at_ask_drops_the_running_answer_that_adoption_keeps(scripted_run):
    # Request 1 speaks at once (0.2 s after it is asked); request 2 is asked at 0.6 s and speaks
    # 0.9 s later. With adoption, 1 streams on meanwhile (to its end here: 30 words at 40/s);
    # with max_streams 1 (what the local provider does), 1 is dropped when 2 is asked.
    adopt, _, server, _ = scripted_run(TWO_ASKS, until=2.2, delays=[0.2, 0.9])
    cancel, _, _, _ = scripted_run(TWO_ASKS, until=2.2, delays=[0.2, 0.9], max_streams=1)
    assert heard_requests(adopt) == [1, 2] and heard_requests(cancel) == [1, 2]
    assert [(e.request, e.reason) for _, e in cancel.of(LlmCancelledEvent)][0] == (1, "superseded")
    assert 1 in [e.request for _, e in adopt.of(LlmDoneEvent)]  # 1 ended on its own

    def answer_1(rec: Recorder) -> list[str]:
        return " ".join(s.text for _, s in rec.signals if isinstance(s, OracleText) and s.request == 1).split()

    assert answer_1(adopt) == "".join(server._answer(1)).split()  # all of it
    assert len(answer_1(cancel)) < len(answer_1(adopt)) - 5


@dataclass
class StubbornLlm(ScriptedLlm):
    """Overlapping, and its first stream ignores one cancellation and speaks anyway: a provider
    whose chunk was already on its way when the newer answer was adopted."""

    overlaps: bool = True
    delays: tuple[float, ...] = (0.8, 0.1)

    async def stream(self, messages, tools=None):
        n = len(self.prompts)
        self.prompts.append(messages)
        try:
            await asyncio.sleep(self.delays[n])
        except asyncio.CancelledError:
            await asyncio.sleep(0.1)  # swallowed: speaks after the adoption all the same
        yield f"Stale answer {n + 1}" if n == 0 else f"Fresh answer {n + 1}"
        yield " goes on."


def test_an_older_answer_speaking_after_the_adoption_is_never_heard():
    rec, _, _ = run("reactive", TWO_ASKS, until=1.5, llm=StubbornLlm())
    assert [e.request for _, e in rec.of(LlmAdoptedEvent)] == [2]
    assert heard_requests(rec) == [2]
    assert not any("Stale" in e.text for _, e in rec.of(LlmChunkEvent))
    assert [(e.request, e.reason) for _, e in rec.of(LlmCancelledEvent)] == [(1, "superseded")]


FOUR_ASKS = [(0.1, partial("one two")), (0.4, partial("one two three four")),
             (0.7, partial("one two three four five six")), (1.0, partial("one two three four five six seven eight"))]


def test_the_stream_limit_keeps_the_adopted_answer_and_the_newest_waiting_ones(scripted_run):
    # Request 1 speaks at once and is adopted; 2, 3 and 4 wait (5 s) and never speak here.
    rec, manager, _, _ = scripted_run(FOUR_ASKS, until=1.5, delays=[0.05, 5, 5, 5], max_streams=2,
                                      server_options={"words_per_s": 10})  # 1 streams for 3 s
    assert [e.request for _, e in rec.of(LlmRequestEvent)] == [1, 2, 3, 4]
    limited = [e.request for _, e in rec.of(LlmCancelledEvent) if e.reason == "stream limit"]
    assert limited == [2, 3]  # at 3's start: {1 adopted, 2, 3} > 2 → 2 goes; at 4's: 3 goes
    assert [e.request for _, e in rec.of(LlmAdoptedEvent)] == [1]


def test_the_stream_limit_with_nothing_adopted_keeps_the_newest(scripted_run):
    rec, _, _, _ = scripted_run(FOUR_ASKS, until=1.3, delays=[5, 5, 5, 5], max_streams=3)
    assert [e.request for _, e in rec.of(LlmCancelledEvent) if e.reason == "stream limit"] == [1]


def test_closing_cancels_every_live_stream_and_leaves_no_task(scripted_run):
    rec, manager, server, left = scripted_run(FOUR_ASKS[:3], until=1.0, delays=[5, 5, 5])
    assert sorted(e.request for _, e in rec.of(LlmCancelledEvent)) == [1, 2, 3]
    assert manager.streams == {} and left == []
    assert not rec.of(ErrorEvent) and not rec.signals  # nobody spoke; nothing reached the front-end


def test_the_local_provider_still_cancels_at_ask():
    rec, _, _ = run("reactive", TWO_ASKS, until=1.6, llm=ScriptedLlm(delay=0.2))
    assert [(e.request, e.reason) for _, e in rec.of(LlmCancelledEvent)] == [(1, "superseded")]
    (t_cancel, _), (t_request2, _) = rec.of(LlmCancelledEvent)[0], rec.of(LlmRequestEvent)[1]
    assert abs(t_cancel - t_request2) < 0.05  # at the ask, not at the new answer's first text


def test_a_server_that_ends_the_running_answer_for_a_new_one_falls_back_to_cancel_at_ask(llama_server):
    # A real llama_cpp.server ends its running stream ("[DONE]", no finish reason) when a new
    # request arrives. Overlapping on it must not report that as a failure nor retry it: the
    # newer answer simply takes over.
    from kame_desktop.backend.llm.openai_compat import OpenAiLlm

    llm = OpenAiLlm(llama_server, "smollm2", max_tokens=128)
    llm.load()
    rec = Recorder()
    script = [(0.05, final("Tell me a long story about a dragon and a knight.")),
              (1.0, final("Actually, what is the capital of France?"))]

    async def main():
        rec.t0 = time.monotonic()
        manager = OracleManager(llm, rec.post, rec.emit, policy=PolicyConfig(name="reactive", max_streams=3))
        manager.start()
        for t, event in script:
            await asyncio.sleep(max(0.0, t - rec.now()))
            manager.on_asr(event)
        for _ in range(600):  # the second answer's end, up to 60 s on a busy machine
            await asyncio.sleep(0.1)
            if 2 in [e.request for _, e in rec.of(LlmDoneEvent)]:
                break
        await manager.close()
        await llm.aclose()

    asyncio.run(main())
    assert [e.request for _, e in rec.of(LlmRequestEvent)] == [1, 2]
    assert not rec.of(ErrorEvent)
    (_, cancelled), = rec.of(LlmCancelledEvent)
    assert cancelled.request == 1 and cancelled.reason.startswith("superseded")
    assert [(e.request, e.reason) for _, e in rec.of(LlmDoneEvent)] == [(2, "stop")]
    assert OracleDone(2) in [s for _, s in rec.signals] and 2 in heard_requests(rec)


# --- tools: calls, results, and speculation that never acts twice ------------------------------------


@dataclass
class ToolUsingLlm(ScriptedLlm):
    """Calls `call` (once per answer), then answers from the tool's result."""

    call: ToolCall | None = None
    seen_results: list[str] = field(default_factory=list)

    async def stream(self, messages, tools=None):
        self.prompts.append(messages)
        await asyncio.sleep(self.delay)
        if messages[-1]["role"] == "tool":
            self.seen_results.append(messages[-1]["content"])
            yield f"Done: {messages[-1]['content']}."
        elif tools and self.call is not None:
            yield "Let me see."
            yield self.call
        else:
            yield "No tools here."


def counting_turn_tools(timeout_s: float = 2.0, hang: float = 0.0):
    runs: list[tuple[str, float]] = []

    def look(q: str) -> str:
        runs.append(("look", time.monotonic()))
        return f"looked up {q}"

    def write(q: str) -> str:
        runs.append(("write", time.monotonic()))
        time.sleep(hang)
        return f"wrote {q}"

    schema = object_schema(("q",), q={"type": "string"})
    return TurnTools({"look": Tool("look", "", schema, look),
                      "write": Tool("write", "", schema, write, read_only=False, timeout_s=timeout_s)}), runs


def run_with_tools(script, until, llm, tools):
    rec = Recorder()

    async def main():
        rec.t0 = time.monotonic()
        manager = OracleManager(llm, rec.post, rec.emit, policy=PolicyConfig(name="reactive"), tools=tools)
        await drive(manager, rec, script, until)

    asyncio.run(main())
    return rec


def test_a_tool_result_goes_back_to_the_model_and_the_answer_streams_on():
    tools, runs = counting_turn_tools()
    llm = ToolUsingLlm(delay=0.05, call=ToolCall("look", '{"q": "spiders"}', "c1"))
    rec = run_with_tools([(0.05, final("how many legs has a spider"))], 1.0, llm, tools)
    assert [r for r, _ in runs] == ["look"] and llm.seen_results == ["looked up spiders"]
    said = " ".join(s.text for _, s in rec.signals if isinstance(s, OracleText))
    assert said == "Let me see. Done: looked up spiders."  # the text before the call once, then the rest
    assert [(e.name, e.arguments) for _, e in rec.of(ToolCallEvent)] == [("look", '{"q": "spiders"}')]
    assert [(e.name, e.ok, e.summary) for _, e in rec.of(ToolResultEvent)] == [("look", True, "looked up spiders")]
    assert [e.reason for _, e in rec.of(LlmDoneEvent)] == ["stop"] and rec.signals[-1][1] == OracleDone(1)
    round2 = llm.prompts[-1]
    assert round2[-2]["role"] == "assistant" and round2[-2]["tool_calls"][0]["function"]["name"] == "look"
    assert round2[-1] == {"role": "tool", "tool_call_id": "c1", "name": "look", "content": "looked up spiders"}


def test_a_write_asked_on_partial_words_runs_once_on_the_final_words():
    tools, runs = counting_turn_tools()
    llm = ToolUsingLlm(delay=0.05, call=ToolCall("write", '{"q": "timer"}', "c1"))
    script = [(0.05, partial("set a timer")), (0.40, partial("set a timer for ten")),
              (0.80, final("set a timer for ten minutes")), (1.30, TurnEndEvent("vad"))]
    rec = run_with_tools(script, 2.0, llm, tools)
    assert len(rec.of(LlmRequestEvent)) >= 2  # it was asked on the partial words too
    writes = [t - rec.t0 for name, t in runs if name == "write"]
    assert len(writes) == 1 and writes[0] >= 1.30 - 0.05  # once, and only after the turn ended
    done = [e for _, e in rec.of(ToolResultEvent) if e.ok]
    assert len(done) == 1 and done[0].request == rec.of(LlmRequestEvent)[-1][1].request


def test_a_write_the_user_talked_past_never_runs():
    tools, runs = counting_turn_tools()

    class Changing(ToolUsingLlm):
        async def stream(self, messages, tools=None):  # only the first request asks to write
            self.call = self.call if not self.prompts else None
            async for item in ToolUsingLlm.stream(self, messages, tools):
                yield item

    llm = Changing(delay=0.05, call=ToolCall("write", '{"q": "x"}'))
    script = [(0.05, final("delete all my notes")), (0.5, final("no wait, keep them")), (1.0, TurnEndEvent("vad"))]
    rec = run_with_tools(script, 1.6, llm, tools)
    assert runs == [] and not [e for _, e in rec.of(ToolResultEvent) if e.ok]


def test_a_tool_that_hangs_is_cut_at_its_limit_and_the_answer_goes_on():
    tools, runs = counting_turn_tools(timeout_s=0.3, hang=3.0)
    llm = ToolUsingLlm(delay=0.05, call=ToolCall("write", '{"q": "x"}'))
    script = [(0.05, final("write it down")), (0.1, TurnEndEvent("vad"))]
    start = time.monotonic()
    rec = run_with_tools(script, 1.2, llm, tools)
    assert time.monotonic() - start < 2.5  # the hung tool does not hold the back-end up
    (_, result), = rec.of(ToolResultEvent)
    assert not result.ok and "did not answer within 0.3 s" in result.summary
    (_, banner), = rec.of(ErrorEvent)
    assert banner.source == "tool" and banner.message.startswith("write(x):")
    assert [e.reason for _, e in rec.of(LlmDoneEvent)] == ["stop"]
    assert llm.seen_results and llm.seen_results[0].startswith("error:")


def test_without_tools_none_are_offered():
    llm = ToolUsingLlm(delay=0.05, call=ToolCall("look", "{}"))
    rec = run_with_tools([(0.05, final("hello there"))], 0.6, llm, None)
    assert " ".join(s.text for _, s in rec.signals if isinstance(s, OracleText)) == "No tools here."
