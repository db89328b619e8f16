"""Spec §4.2: oracle events from word lists (the reference's worked check and hand-made cases)."""

from __future__ import annotations

import pytest

from kame_desktop.training.layout import Word
from kame_desktop.training.oracle_events import band_guidance, oracle_events, prompt_messages


def words(*items: tuple[str, str, float, float]) -> list[Word]:
    return [Word(s, w, a, b) for s, w, a, b in items]


WORKED = words(
    ("A", "hello", 0.0, 0.4), ("A", "there", 0.4, 0.8), ("A", "how", 0.8, 1.2), ("A", "today", 1.2, 1.6),
    ("B", "fine", 1.7, 2.1), ("B", "thanks", 2.1, 2.5),
)


def test_worked_check():
    events = oracle_events(WORKED, 0.5)
    assert [e.t for e in events] == [1.0, 1.5, 2.0]
    assert [e.ratio for e in events] == [0.5, 0.75, 1.0]
    assert [e.channel for e in events] == [1, 1, 1]
    assert [e.hint for e in events] == ["", "fine thanks", "fine thanks"]
    first = events[0].record("a prediction")
    assert list(first) == ["timestamp_ms", "conversation_context", "prediction", "total_word_count", "trigger_word",
                           "recent_words", "current_spoken_ratio", "channel", "hint"]
    assert first["timestamp_ms"] == 1000 and first["conversation_context"] == "A: hello there"
    assert first["trigger_word"] == "there" and first["total_word_count"] == 2


def test_turn_boundaries_gap_and_speaker_change():
    # A speaks two words, pauses 1.2 s (a new turn), then two more; B answers.
    ws = words(("A", "one", 0.0, 0.3), ("A", "two", 0.3, 0.6), ("A", "three", 1.4, 1.8), ("A", "four", 1.8, 2.0),
               ("B", "yes", 2.5, 2.9), ("B", "sure", 2.9, 3.2), ("A", "ok", 3.6, 3.9))
    events = oracle_events(ws, 0.5)
    by_t = {round(e.t, 3): e for e in events}
    assert by_t[1.0].ratio == 1.0  # the gap ≥ 1.0 s after "two" closes the turn
    assert by_t[2.0].ratio == 1.0  # four trailing A words, all spoken
    # B's turn: after "yes" at 3.0 s, "sure" follows within the gap, then A speaks.
    assert by_t[3.0].ratio == 0.5 and by_t[3.0].channel == 0
    assert by_t[3.0].truth == "ok" and by_t[3.0].hint == ""
    assert by_t[1.0].truth == "yes sure"  # skips A's later words, stops at A's next word
    assert by_t[3.0].context == "A: one two three four\nB: yes"
    assert by_t[2.0].recent_words == "one two three four"


def test_generation_stops_when_no_next_turn():
    ws = words(("A", "hi", 0.0, 0.3), ("B", "hey", 0.4, 0.6), ("B", "you", 0.6, 0.9), ("B", "there", 1.6, 2.4))
    events = oracle_events(ws, 0.5)
    # At 1.0 s B has spoken last and A never answers: no hint, so the dialogue stops at once.
    assert events == []


def test_fewer_than_two_words_and_target_filter():
    events = oracle_events(WORKED, 0.5, target_channel=0)
    assert events == []
    assert oracle_events(WORKED[:1], 0.5) == []


@pytest.mark.parametrize(("ratio", "shows_hint"), [(0.5, False), (0.51, True), (0.7, True), (1.0, True)])
def test_prompt_bands(ratio, shows_hint):
    from dataclasses import replace

    event = replace(oracle_events(WORKED, 0.5)[0], ratio=ratio)
    system, user = (m["content"] for m in prompt_messages(event))
    assert ("fine thanks" in user) is shows_hint
    assert "at most 30 words" in system and "at least 10" in system
    assert user.startswith("Conversation so far:\nA: hello there")
    assert (band_guidance(ratio) is None) is (not shows_hint)


def test_bands_are_distinct():
    texts = {band_guidance(r) for r in (0.6, 0.7, 0.9, 0.97, 1.0)}
    assert len(texts) == 5
