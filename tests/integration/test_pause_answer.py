"""The answer asked at the user's pause (issue 23): real Whisper (`auto`: tiny.en, then base) and
Piper speech through a lite session, paced at real time. The LLM is a stand-in that numbers its
replies, so which request's answer was spoken is known exactly."""

from __future__ import annotations

import re

import numpy as np
import pytest
from fixtures.llm import ScriptedLlm

from kame_desktop.bench.lite import run_one
from kame_desktop.config import AsrSettings, FrontEndSettings, LlmSettings, Settings
from kame_desktop.events import SAMPLE_RATE, AsrFinalEvent, AsrPartialEvent, LlmRequestEvent


class NumberedLlm(ScriptedLlm):
    """Replies "Reply number N." to its N-th request (quickly, as a small local model would)."""

    def reply(self, messages):
        return (f"Reply number {len(self.prompts)}.",)


@pytest.fixture(scope="module")
def auto_asr(model_cache):
    from kame_desktop.backend.asr.whisper import WhisperAsr

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KAME_CACHE_DIR", str(model_cache))
        return WhisperAsr("auto")


def voiced(piper_voice, text: str) -> np.ndarray:
    from kame_desktop.bench.lite import WINDOW, loud_windows

    pcm = piper_voice.synthesize(text)
    loud = loud_windows(pcm)
    return pcm[loud[0] * WINDOW : (loud[-1] + 1) * WINDOW]


def silence(s: float) -> np.ndarray:
    return np.zeros(round(s * SAMPLE_RATE), np.float32)


def run(auto_asr, piper_voice, pcm: np.ndarray, turn_detection: str):
    settings = Settings(llm=LlmSettings(policy="reactive"), asr=AsrSettings(turn_detection=turn_detection),
                        frontend=FrontEndSettings(kind="lite"))
    _, records = run_one(auto_asr, piper_voice, NumberedLlm(delay=0.05), pcm, settings)
    spoken = "".join(r.event.piece for r in records if r.event.kind == "assistant_token")
    return records, spoken


def first_pause(records):
    return next(r for r in records if isinstance(r.event, AsrPartialEvent) and r.event.pause and r.event.text.strip())


def test_final_words_equal_to_the_pause_pass_play_its_answer_with_no_further_request(auto_asr, piper_voice):
    pcm = np.concatenate([silence(0.5), voiced(piper_voice, "What is the capital of France?"), silence(3.0)])
    records, spoken = run(auto_asr, piper_voice, pcm, "smart")
    pause = first_pause(records)
    finals = [r for r in records if isinstance(r.event, AsrFinalEvent)]
    requests = [r for r in records if isinstance(r.event, LlmRequestEvent)]
    heard = " ".join(r.event.text for r in finals).lower()
    assert "capital of france" in heard, heard
    # At most the pause pass's own request after the pause, none once the final words are in.
    assert len([r for r in requests if r.frame >= pause.frame]) <= 1
    assert not [r for r in requests if r.frame > finals[-1].frame]
    number = re.fullmatch(r"Reply number (\d+)\.", spoken.strip())
    assert number, spoken
    assert int(number.group(1)) == requests[-1].event.request  # the answer asked with the pause's words


def test_a_pause_pass_whose_words_the_user_goes_on_from_is_never_heard(auto_asr, piper_voice):
    """The user pauses mid-question (shorter than the turn's hang-over): the pause pass's words
    are asked at once, then the final words differ, and only the answer to those is spoken."""
    pcm = np.concatenate([silence(0.5), voiced(piper_voice, "What is the capital"), silence(0.45),
                          voiced(piper_voice, "of France?"), silence(3.0)])
    records, spoken = run(auto_asr, piper_voice, pcm, "silence")
    pause = first_pause(records)
    assert "france" not in pause.event.text.lower(), pause.event  # the words before the pause only
    asked_at_pause = [r.event.request for r in records if isinstance(r.event, LlmRequestEvent) and r.frame == pause.frame]
    assert asked_at_pause, "the pause pass's words were asked at once"
    last = [r for r in records if isinstance(r.event, LlmRequestEvent)][-1].event.request
    assert last > asked_at_pause[0]
    assert spoken.strip() == f"Reply number {last}.", spoken
