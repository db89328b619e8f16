"""The dialogue the LLM sees: chat turns (or the reference's transcript), fitted to a token
budget newest first, counted with a shipped model's real tokenizer."""

from __future__ import annotations

import pytest

from kame_desktop.backend.oracle_manager import OracleManager
from kame_desktop.backend.prompts import (
    ANSWER_TOKENS,
    ASSISTANT,
    USER,
    Conversation,
    build_messages,
    fit_history,
)


@pytest.fixture(scope="module")
def smollm2():
    from kame_desktop.backend.llm.local import SMOLLM2, LocalLlm

    llm = LocalLlm(SMOLLM2, n_ctx=512, n_threads=1)
    llm.load()
    yield llm
    llama = llm.load()
    llama.close()


def prompt_tokens(llm, messages) -> int:
    """Tokens of the request as llama.cpp sends it: the GGUF's own chat template, applied."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    llama = llm.load()
    template = Jinja2ChatFormatter(llama.metadata["tokenizer.chat_template"], eos_token="", bos_token="")
    prompt = template(messages=messages).prompt
    return len(llama.tokenize(prompt.encode(), add_bos=True, special=True))


def long_conversation(exchanges: int) -> Conversation:
    conversation = Conversation()
    for i in range(exchanges):
        conversation.add(USER, f"question {i}: what is the capital of country number {i} on my list?")
        conversation.add(ASSISTANT, f"Answer {i}: that capital is a lovely old city by a wide river.")
    return conversation


def test_a_late_request_carries_the_turns_the_budget_allows(smollm2):
    conversation = long_conversation(60)  # ~2,000 tokens of history against a 512-token context
    conversation.add(USER, "and what about the last one?")
    manager = OracleManager(smollm2, lambda s: True, lambda e: None)
    manager.conversation = conversation
    messages = manager._messages()
    sent = messages[1:]
    assert messages[0]["role"] == "system"
    assert sent[-1] == {"role": "user", "content": "And what about the last one?"}
    # Trimmed, not dropped: several earlier exchanges, as alternating chat turns, newest kept.
    assert len(sent) >= 5
    assert [m["role"] for m in sent[-3:]] == ["user", "assistant", "user"]
    assert sent[-2]["content"].startswith("Answer 59:")
    assert sent[0]["role"] == "user"
    assert not any("question 0:" in m["content"] for m in sent)
    # The whole request, as the model's template renders it, leaves room for the answer.
    assert prompt_tokens(smollm2, messages) <= smollm2.context_tokens - ANSWER_TOKENS


def test_the_prompt_fits_at_every_length_of_the_conversation(smollm2):
    manager = OracleManager(smollm2, lambda s: True, lambda e: None)
    for i in range(40):
        manager.conversation.add(USER, f"tell me something new about topic {i} " + "please " * (i % 7))
        messages = manager._messages()
        assert messages[-1]["role"] == "user" and f"topic {i}" in messages[-1]["content"]
        assert prompt_tokens(smollm2, messages) <= smollm2.context_tokens - ANSWER_TOKENS
        manager.conversation.add(ASSISTANT, f"Here is a fact about topic {i}, and a second sentence about it.")


def test_the_turn_at_the_edge_keeps_its_last_words():
    words = len  # one token per character: easy to count by hand
    turns = [(USER, "one two three four five six seven eight nine ten"), (ASSISTANT, "ok"), (USER, "last")]
    kept = fit_history(turns, words, budget=30, overhead=2)
    assert kept[1:] == [(ASSISTANT, "ok"), (USER, "last")]
    assert kept[0][0] == USER and turns[0][1].endswith(kept[0][1]) and 8 <= len(kept[0][1]) <= 22


def test_an_over_long_newest_turn_is_cut_to_fit():
    kept = fit_history([(USER, "word " * 100)], lambda t: len(t.split()), budget=20, overhead=5)
    assert kept == [(USER, " ".join(["word"] * 15))]


def test_transcript_form_is_the_references():
    turns = [(USER, "hi there"), (ASSISTANT, "Hello friend"), (USER, "how are")]
    messages = build_messages("S", turns, lambda t: len(t.split()), budget=1000, dialogue="transcript")
    assert messages == [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "user: hi there\nkame: Hello friend\nuser: how are"},
    ]


def test_chat_form_starts_with_the_user():
    turns = [(ASSISTANT, "Welcome back"), (USER, "hi"), (ASSISTANT, "Hello"), (USER, "how are you")]
    messages = build_messages("S", turns, lambda t: len(t.split()), budget=1000)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]


def test_the_prompt_keeps_its_start_between_cuts():
    """The oldest turns go in one step, so most requests begin as the one before did (a local
    model then reads only the new turns) and each cut still leaves half the budget of history."""
    count = lambda text: len(text.split())  # noqa: E731
    conversation = Conversation()
    firsts, sizes = [], []
    for i in range(200):
        conversation.add(USER if i % 2 == 0 else ASSISTANT, f"turn {i} " + "word " * 8)
        turns = conversation.window("", count, budget=200)
        firsts.append(turns[0][1])
        sizes.append(sum(count(t) + 6 for _, t in turns))
    assert max(sizes) <= 200 and min(sizes[50:]) >= 100 - 16  # half, less the turn at the edge
    changes = sum(a != b for a, b in zip(firsts, firsts[1:], strict=False))
    assert 0 < changes <= 200 // 5  # the start moved, but not at every turn


def test_a_user_turn_starts_with_a_capital_whatever_the_pass_wrote():
    """Whisper's passes write the first word either way; the prompt does not change with it, so a
    local model re-reads only the words that changed (its KV cache keeps the rest)."""
    conversation = Conversation()
    assert conversation.turns("what is the") == [(USER, "What is the")]
    conversation.add(USER, "what is the capital of France?")
    assert conversation.turns("and Spain") == [(USER, "What is the capital of France? and Spain")]
    conversation.add(ASSISTANT, "it is Paris.")  # the companion's words stay as it said them
    assert conversation.turns("and Spain") == [(USER, "What is the capital of France?"), (ASSISTANT, "it is Paris."),
                                              (USER, "And Spain")]
    assert conversation.turns("1984 was")[-1] == (USER, "1984 was")
    assert conversation.turns("iPhone or Android?")[-1] == (USER, "iPhone or Android?")  # a name as it is written
