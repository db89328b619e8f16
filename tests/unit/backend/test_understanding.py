""""Didn't catch that": a turn whose words the recognizer does not trust is not answered. The
LLM here repeats the user's last words back (what SmolLM2 did with "Hoorotro Mino and do the
rest."), so an answer built from garbled words would be heard as them."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from fixtures.llm import ScriptedLlm

from kame_desktop.backend.oracle_manager import REPEAT_REPLY, Heard, OracleManager, understood
from kame_desktop.events import (
    AsrFinalEvent,
    AsrPartialEvent,
    AsrUnclearEvent,
    LlmCancelledEvent,
    OracleDone,
    OracleReset,
    OracleText,
    TurnEndEvent,
)

GARBLED = "Hoorotro Mino and do the rest."


@dataclass
class EchoLlm(ScriptedLlm):
    """Streams the user's last words back, a word every 0.15 s (still writing when the turn ends)."""

    name: str = "echo"
    delay: float = 0.15

    def reply(self, messages: list[dict]) -> list[str]:
        return [word + " " for word in messages[-1]["content"].split()]


def talk(turns: list[tuple[str, float | None]]) -> tuple[list, list, list[int | None], EchoLlm]:
    """Each turn: a partial, its final (with that avg_logprob), the turn's end; returns the events,
    the signals, the request the front-end is told to answer with at each turn end, the LLM."""
    events, signals, answers, llm = [], [], [], EchoLlm()

    async def main() -> None:
        manager = OracleManager(llm, lambda s: signals.append(s) or True, events.append)
        manager.start()
        for text, logprob in turns:
            manager.on_asr(AsrPartialEvent(text, (), logprob, 0.05))
            await asyncio.sleep(0.3)
            manager.on_asr(AsrFinalEvent(text, (), logprob, 0.05))
            await asyncio.sleep(0.3)
            manager.on_asr(TurnEndEvent("vad"))
            answers.append(manager.answer_request())
            await asyncio.sleep(1.2)
            manager.on_companion_text(" ".join(s.text for s in signals if isinstance(s, OracleText)
                                                and s.request == answers[-1]))
        await manager.close()

    asyncio.run(main())
    return events, signals, answers, llm


def answer_text(signals: list, request: int | None) -> str:
    return " ".join(s.text for s in signals if isinstance(s, OracleText) and s.request == request)


def test_garbled_words_are_never_repeated_back_as_the_answer():
    started = time.monotonic()
    events, signals, answers, llm = talk([(GARBLED, -1.4), ("What is the capital of France?", -0.3)])
    garbled_answer, clear_answer = answers
    assert answer_text(signals, garbled_answer) == REPEAT_REPLY
    assert "Hoorotro" not in answer_text(signals, garbled_answer)
    i = signals.index(OracleReset(garbled_answer))
    assert signals[i : i + 3] == [OracleReset(garbled_answer), OracleText(garbled_answer, REPEAT_REPLY),
                                  OracleDone(garbled_answer)]
    unclear = [e for e in events if isinstance(e, AsrUnclearEvent)]
    assert unclear == [AsrUnclearEvent(garbled_answer, GARBLED, REPEAT_REPLY, -1.4, 0.05)]
    assert any(isinstance(e, LlmCancelledEvent) and e.reason == "not understood" for e in events), \
        "the answer the LLM was writing about the garbled words stops"
    # the next question is answered, and the LLM never sees the garbled words again
    assert "capital of France" in answer_text(signals, clear_answer)
    assert "Hoorotro" not in str(llm.prompts[-1]) and "capital of France" in str(llm.prompts[-1])
    assert time.monotonic() - started < 10


def test_trusted_words_are_answered():
    events, signals, answers, _ = talk([("What is the capital of France?", -0.3)])
    assert "capital of France" in answer_text(signals, answers[0])
    assert not [e for e in events if isinstance(e, AsrUnclearEvent)]


def test_understood_weighs_words_and_trusts_a_recognizer_without_scores():
    assert understood(Heard())  # OpenAI's gpt-4o models, Kyutai: no scores, always trusted
    assert understood(Heard().add(AsrFinalEvent("one two three")))
    mixed = Heard().add(AsrFinalEvent("what is the capital of", (), -0.2)).add(AsrFinalEvent("gnarf", (), -2.0))
    assert mixed.avg_logprob == round((5 * -0.2 - 2.0) / 6, 3) and understood(mixed)
    assert not understood(Heard().add(AsrFinalEvent("what is the", (), -0.3, 0.9))), "maybe no speech at all"
