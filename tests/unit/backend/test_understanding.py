""""Didn't catch that": a turn whose words the recognizer does not trust is not answered. The
LLM here repeats the user's last words back (what SmolLM2 did with "Hoorotro Mino and do the
rest."), so an answer built from garbled words would be heard as them. The last tests speak a
question (Piper) through the app's Whisper, clean and with noise over its end."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import numpy as np
from fixtures.llm import ScriptedLlm

from kame_desktop.backend.asr.whisper import sound_after_words
from kame_desktop.backend.oracle_manager import (
    REPEAT_REPLY,
    UNCLEAR_UNHEARD_S,
    Heard,
    OracleManager,
    understood,
)
from kame_desktop.events import (
    AsrFinalEvent,
    AsrPartialEvent,
    AsrUnclearEvent,
    LlmCancelledEvent,
    OracleDone,
    OracleReset,
    OracleText,
    TurnEndEvent,
    Word,
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


def test_speech_that_goes_on_after_the_last_word_is_not_understood():
    said = AsrFinalEvent("What is the biggest", (), -0.3, 0.05)
    assert understood(Heard().add(said))
    assert not understood(Heard().add(AsrFinalEvent("What is the biggest", (), -0.3, 0.05, UNCLEAR_UNHEARD_S + 0.3)))
    assert understood(Heard().add(AsrFinalEvent("What is the biggest", (), -0.3, 0.05, 0.1)))
    # the latest measure counts: a pause mid-question, then the rest of it heard
    paused = Heard().add(AsrPartialEvent("What is the", (), -0.3, 0.05, pause=True, unheard_s=0.9))
    assert not understood(paused)
    assert understood(paused.add(AsrFinalEvent("What is the biggest desert in Africa?", (), -0.3, 0.05, 0.1)))
    # a recognizer without confidence scores still says when speech went unheard
    assert not understood(Heard().add(AsrFinalEvent("What is the", unheard_s=1.0)))


def test_unsure_words_are_not_understood():
    """Whisper's word probabilities: below 0.5 on average (log −0.69) the words are guessed."""
    sure, unsure = AsrFinalEvent("What is the", (), -0.3, 0.05, 0.1, -0.2), AsrFinalEvent("tall son", (), -0.5, 0.05, 0.1, -1.6)
    assert understood(Heard().add(sure))
    both = Heard().add(sure).add(unsure)
    assert both.word_logprob == round((3 * -0.2 + 2 * -1.6) / 5, 3) and not understood(both)


def test_sound_after_words_ends_where_the_sound_falls_quiet_or_the_speech_ends():
    rate = 16_000
    rng = np.random.default_rng(0)
    speech = 0.1 * rng.standard_normal(rate).astype(np.float32)  # 1 s "spoken" at t = 1 … 2 s
    words = [Word("what", 1.0, 1.4), Word("is", 1.5, 2.0)]
    quiet = np.concatenate([np.zeros(rate, np.float32), speech, 0.0005 * rng.standard_normal(rate).astype(np.float32)])
    assert sound_after_words(quiet, 0.0, words, speech_end=3.0) < 0.05, "a quiet room after the words"
    noisy = np.concatenate([np.zeros(rate, np.float32), speech, 0.3 * rng.standard_normal(rate).astype(np.float32)])
    assert abs(sound_after_words(noisy, 0.0, words, speech_end=3.0) - 1.0) < 0.05, "loud until the end"
    assert abs(sound_after_words(noisy, 0.0, words, speech_end=2.5) - 0.5) < 0.01, "at most the speech's end"
    assert sound_after_words(noisy, 0.0, [], speech_end=3.0) is None
    # the words' own level, not the loudest sound: a clap in the pause does not raise the bar
    assert sound_after_words(np.concatenate([noisy, np.ones(512, np.float32)]), 0.0, words, 3.0) > 0.9


def test_a_question_lost_in_noise_is_asked_again_and_never_repeated_back(model_cache, piper_voice, monkeypatch):
    """The app's Whisper hears a Piper question with noise 10 dB louder than the speech over its
    last 60 % (`bench unclear`'s `noise`): the companion asks to hear it again, and nothing of what
    Whisper wrote (it writes a short question: "What is the …?") is said back. Clean, it is answered."""
    from kame_desktop.backend.asr.whisper import WhisperAsr
    from kame_desktop.bench.unclear import degrade, hear

    monkeypatch.setenv("KAME_CACHE_DIR", str(model_cache))
    asr = WhisperAsr()
    asr.adaptive_pacing = False
    question = "What is the biggest desert in Africa?"
    pcm = piper_voice.synthesize(question)

    def through_the_manager(events: list) -> tuple[list, list, int | None]:
        out, signals, llm = [], [], EchoLlm(delay=0.05)

        async def main() -> int | None:
            manager = OracleManager(llm, lambda s: signals.append(s) or True, out.append)
            manager.start()
            for event in events:
                manager.on_asr(event)
                await asyncio.sleep(0.05)
            answer = manager.answer_request()
            await asyncio.sleep(1.5)
            await manager.close()
            return answer

        return out, signals, asyncio.run(main())

    asr_events = hear(asr, degrade(pcm, "noise", -10.0, np.random.default_rng(0)))
    heard = " ".join(e.text for e in asr_events if isinstance(e, AsrFinalEvent))
    events, signals, answer = through_the_manager(asr_events)
    assert [e.heard for e in events if isinstance(e, AsrUnclearEvent)] == [heard], heard
    assert answer_text(signals, answer) == REPEAT_REPLY
    said = " ".join(s.text for s in signals if isinstance(s, OracleText) and s.request == answer)
    assert heard.lower().strip("?. ") not in said.lower(), "what Whisper wrote is never said back"

    events, signals, answer = through_the_manager(hear(asr, degrade(pcm, "clean", -10.0, np.random.default_rng(0))))
    assert not [e for e in events if isinstance(e, AsrUnclearEvent)]
    assert "desert in Africa" in answer_text(signals, answer)
