"""Spec §4.8b: the random strategy's rules on hand-made transcripts (whitespace words as tokens):
each target ends on its truth (use_hint), earlier events carry other dialogues' responses within
the length bounds, draws are seeded per target, and the named errors."""

from __future__ import annotations

from dataclasses import replace

import pytest

from kame_desktop.errors import TrainingDataError
from kame_desktop.training.layout import Word
from kame_desktop.training.oracle_events import oracle_events
from kame_desktop.training.random_oracle import build_pool, predict_random, word_tokens


def dialogue(*turns: str, word_s: float = 0.4, gap_s: float = 0.8) -> list[Word]:
    words, t = [], 0.2
    for i, turn in enumerate(turns):
        for w in turn.split():
            words.append(Word("AB"[i % 2], w, round(t, 2), round(t + word_s - 0.05, 2)))
            t += word_s
        t += gap_s
    return words


TARGET = dialogue("hello there how are you doing", "i am fine thanks for asking", "good to hear that")
POOL = {
    f"p{i}": dialogue(f"question number {i} goes here", " ".join(f"answer{i}x{j}" for j in range(2 + i % 6)),
                      " ".join(f"reply{i}y{j}" for j in range(3 + i % 4)))
    for i in range(30)
}


def test_targets_end_on_the_truth_and_draw_other_dialogues_responses():
    pool = build_pool({**POOL, "target": TARGET}, word_tokens, 0.5)
    events = oracle_events(TARGET, 0.5)
    chosen = predict_random("target", TARGET, events, pool, word_tokens, seed=1)
    by_target: dict[int, list[int]] = {}
    for i, e in enumerate(events):
        by_target.setdefault(e.target, []).append(i)
    assert sorted(by_target) == [6, 12]  # both turns after a speaker change
    responses = {c.text: c for c in pool}
    for indices in by_target.values():
        *randoms, last = indices
        assert chosen[last] == ("", True) and events[last].ratio > 0.5 and events[last].hint == events[last].truth
        assert randoms and all(chosen[i][1] is False for i in randoms)
        picked = [chosen[i][0] for i in randoms]
        assert len(set(picked)) == len(picked)  # without replacement within a response
        length = len(events[last].truth.split())
        for text in picked:
            assert "target" not in responses[text].owners  # another dialogue's response
            assert 0.5 * length <= len(text.split()) <= 2 * length
    # Seeded per target: the same seed draws the same, another seed draws otherwise.
    assert predict_random("target", TARGET, events, pool, word_tokens, seed=1) == chosen
    assert predict_random("target", TARGET, events, pool, word_tokens, seed=2) != chosen


def test_pool_is_deduplicated_by_tokens_and_excludes_this_dialogues_turns():
    twin = dialogue("what now", "i am fine thanks for asking", "ok then")  # TARGET's answer, word for word
    pool = build_pool({"a": twin, "b": twin, **POOL}, word_tokens, 0.5)
    same = [c for c in pool if c.text == "i am fine thanks for asking"]
    assert len(same) == 1 and same[0].owners == {"a", "b"}
    events = oracle_events(TARGET, 0.5)
    picked = {p for p, use_hint in predict_random("target", TARGET, events, pool, word_tokens) if not use_hint}
    assert "i am fine thanks for asking" not in picked


def test_named_errors():
    pool = build_pool(POOL, word_tokens, 0.5)
    events = oracle_events(TARGET, 0.5)
    last_of_first = max(i for i, e in enumerate(events) if e.target == 6)

    lowered = list(events)
    lowered[last_of_first] = replace(events[last_of_first], ratio=0.4)
    with pytest.raises(TrainingDataError, match=r"turn at word 6 \(speaker B.*events_after_last_eligible_hint"):
        predict_random("target", TARGET, lowered, pool, word_tokens)

    none = [replace(e, ratio=0.5) if e.target == 6 else e for e in events]
    with pytest.raises(TrainingDataError, match="turn at word 6 .*no_eligible_hint"):
        predict_random("target", TARGET, none, pool, word_tokens)

    missing = [e for e in events if e.target != 12]
    with pytest.raises(TrainingDataError, match="turn at word 12 .*'good'.*no_scheduled_events"):
        predict_random("target", TARGET, missing, pool, word_tokens)

    small = build_pool(dict(list(POOL.items())[:1]), word_tokens, 0.5)
    with pytest.raises(TrainingDataError, match=r"Insufficient random responses \(need \d+, found [01] "):
        predict_random("target", TARGET, events, small, word_tokens)
