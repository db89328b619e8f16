"""`bench oracle-lag`'s oracle_gap_share, on a made-up timeline whose answer is known."""

from __future__ import annotations

from kame_desktop.bench.oracle_lag import oracle_gap_frames
from kame_desktop.events import (
    AsrFinalEvent,
    LlmCancelledEvent,
    LlmDoneEvent,
    LlmRequestEvent,
    OracleTokenEvent,
    Stamped,
    Word,
)


def token(frame: int, request: int) -> Stamped:
    return Stamped(frame, OracleTokenEvent(request, 7, "▁x"))


def test_gap_frames_count_pad_while_a_request_is_live_from_the_first_word_to_the_last_token():
    records = [
        Stamped(2, LlmRequestEvent(1, "reactive", 1)),  # before the first word: not counted yet
        Stamped(4, AsrFinalEvent("what is it", (Word("what", 0.41, 0.6), Word("is", 0.6, 0.7)))),  # word at frame 5
        Stamped(8, LlmCancelledEvent(1, "superseded")),  # frames 5–7: live, PAD → 3 gaps
        *[token(f, 2) for f in range(10, 14)],  # 8, 9: nothing live (not counted); 10–13 fed
        Stamped(10, LlmRequestEvent(2, "reactive", 3)),
        Stamped(12, LlmDoneEvent(2, "stop")),  # 12, 13: fed, but nothing live → not counted
        Stamped(20, LlmRequestEvent(3, "reactive", 3)),  # after the last token: outside the span
    ]
    assert oracle_gap_frames(records) == (3, 5)  # live 5, 6, 7, 10, 11; PAD in 5, 6, 7


def test_no_words_or_no_tokens_is_no_span():
    assert oracle_gap_frames([Stamped(1, LlmRequestEvent(1, "reactive", 1)), token(3, 1)]) == (0, 0)


def test_spoken_texts_alternate_questions_and_requests_and_keep_the_rest_at_the_end():
    from kame_desktop.bench.oracle_lag import spoken_texts

    assert spoken_texts(("q1", "q2", "q3"), ("r1",)) == ["q1", "r1", "q2", "q3"]
    assert spoken_texts(("q1",), ("r1", "r2")) == ["q1", "r1", "r2"]


def test_the_scripted_llm_delays_the_same_prompt_the_same_in_every_arm_whatever_the_order():
    """The arms of `bench oracle-lag` are compared on the same delays: a request's first-token
    delay depends on its messages (and the seed), not on how many requests came before it."""
    from kame_desktop.bench.scripted_llm import ScriptedLlmServer

    prompts = [[{"role": "user", "content": f"user: what is {n}"}] for n in range(20)]
    first, second = ScriptedLlmServer(), ScriptedLlmServer()
    delays = [first._register(p, None).first_token_delay for p in prompts]
    reordered = {n: second._register(prompts[n], None).first_token_delay for n in reversed(range(20))}
    assert delays == [reordered[n] for n in range(20)]
    assert all(0.3 <= d <= 0.9 for d in delays) and len(set(delays)) == 20
    assert ScriptedLlmServer(seed=1)._register(prompts[0], None).first_token_delay != delays[0]
