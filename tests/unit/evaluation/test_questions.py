"""Question sets: the shipped facts, MT-Bench from its package data, and user JSONL."""

from __future__ import annotations

import json

import pytest

from kame_desktop.errors import KameError
from kame_desktop.evaluation.questions import SPEECH_CATEGORIES, judge_prompts, load_set
from kame_desktop.evaluation.scoring import fact_hit, normalize


def test_facts_set_is_shipped_and_scorable():
    facts = load_set("facts")
    assert len(facts) >= 60 and len({q.id for q in facts}) == len(facts)
    for q in facts:
        assert len(q.turns) == 1 and q.turns[0].endswith("?") and q.is_fact
        assert all(normalize(a) for a in q.answers), q  # every accepted answer survives normalisation
        assert not fact_hit(q.turns[0], q.answers), q  # echoing the question never scores
    numeric = [q for q in facts if any(a.isdigit() for a in q.answers)]
    assert len(numeric) >= 10 and all(any(not a.isdigit() for a in q.answers) for q in numeric)  # digits and words


def test_mtbench_sets_come_from_the_package():
    every = load_set("mtbench")
    assert len(every) == 80 and all(len(q.turns) == 2 and not q.is_fact for q in every)
    speech = load_set("mtbench-speech")
    assert {q.category for q in speech} == set(SPEECH_CATEGORIES) and len(speech) == 30
    assert any(q.reference for q in speech)  # reasoning questions carry reference answers
    assert load_set("mtbench-speech", limit=4) == speech[:4]
    assert [q.category for q in speech[:6]] == ["reasoning", "stem", "humanities"] * 2  # --limit takes a mix
    assert len({q.category for q in every[:8]}) == 8
    prompts = judge_prompts()
    for name in ("single-v1", "single-math-v1", "single-v1-multi-turn", "single-math-v1-multi-turn"):
        assert "[[rating]]" in prompts[name]["system_prompt"] + prompts[name]["prompt_template"]


def test_user_jsonl_in_either_format(tmp_path):
    path = tmp_path / "mine.jsonl"
    rows = [{"id": "a", "question": "What is two plus two?", "answers": ["4", "four"]},
            {"question_id": 7, "category": "stem", "turns": ["Why is the sky blue?", "And at sunset?"]}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    first, second = load_set(str(path))
    assert (first.id, first.category, first.answers, first.is_fact) == ("a", "general", ("4", "four"), True)
    assert (second.id, second.turns[1], second.is_fact) == ("7", "And at sunset?", False)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "not JSON"),
        ('{"id": "x"}', "needs 'question'"),
        ('{"question": "Hi?"}', "needs an 'id'"),
        ('{"id": "x", "question": "Hi?", "answers": "4"}', "list of strings"),
        ('{"id": "x", "turns": []}', "empty question"),
    ],
)
def test_bad_user_sets_say_what_is_wrong(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(line + "\n", encoding="utf-8")
    with pytest.raises(KameError, match=message):
        load_set(str(path))


def test_unknown_set_name():
    with pytest.raises(KameError, match="no question set"):
        load_set("trivia")
