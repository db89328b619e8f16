"""The lite front-end on scripted signals, with the real Piper voice (no back-end)."""

from __future__ import annotations

import numpy as np
import pytest

from kame_desktop.events import (
    FRAME_SIZE,
    AssistantTokenEvent,
    BargeInEvent,
    OracleDone,
    OracleReset,
    OracleText,
    SpeechEndEvent,
    SpeechStartEvent,
    TurnEnded,
    UserSpeechStarted,
)
from kame_desktop.frontend.lite.engine import ECHO_SETTLE_S, LiteFrontEnd
from kame_desktop.frontend.select import choose_frontend

SILENCE = np.zeros(FRAME_SIZE, dtype=np.float32)


@pytest.fixture(scope="module")
def tts():
    from kame_desktop.frontend.lite.tts import PiperTts

    return PiperTts(threads=1)


@pytest.fixture
def lite(tts):
    frontend = LiteFrontEnd(tts, barge_in=True)
    yield frontend
    frontend.close()


def run_frames(frontend, n, signals_at=None):
    """Step n silent frames; signals_at maps frame index → signals. Returns (pcm, events by frame)."""
    import time

    pcm, events = [], []
    run_frames.clock = []
    for i in range(n):
        run_frames.clock.append(time.monotonic())
        result = frontend.step(SILENCE, (signals_at or {}).get(i, []))
        pcm.append(result.pcm)
        events.append(result.events)
        time.sleep(0.02)  # give the TTS thread a share of the CPU, as a paced session would
    return np.concatenate(pcm), events


def run_until_loud(frontend, signals_at=None, limit_s: float = 60.0) -> np.ndarray:
    """Step frames until the output makes sound (or `limit_s` passes): a slow or busy machine
    only takes longer."""
    import time

    deadline, pcm = time.monotonic() + limit_s, []
    while time.monotonic() < deadline:
        chunk, _ = run_frames(frontend, 1, {0: (signals_at or {}).get(len(pcm), [])})
        pcm.append(chunk)
        if np.abs(chunk).max() > 0.01:
            break
    return np.concatenate(pcm)


def run_until_said(frontend, limit_s: float = 60.0) -> list:
    """Step frames until the reply has been said to its end (speech_end), however slow the TTS."""
    import time

    deadline, events = time.monotonic() + limit_s, []
    while time.monotonic() < deadline:
        _, more = run_frames(frontend, 1)
        events += more
        if SpeechEndEvent("assistant") in more[0]:
            break
    return events


def first_loud_frame(pcm) -> int | None:
    frames = pcm.reshape(-1, FRAME_SIZE)
    loud = np.flatnonzero(np.abs(frames).max(axis=1) > 0.01)
    return int(loud[0]) if len(loud) else None


def test_speaks_the_answer_at_turn_end_and_not_before(lite):
    import time

    pcm, events = run_frames(lite, 10, {0: [OracleReset(1), OracleText(1, "The capital of France is Paris.")]})
    pcm2, events2 = run_frames(lite, 1, {0: [OracleDone(1)]})
    # However slow this machine is: wait (stepping, as a session would) until the first clause
    # is back from the TTS, synthesized ahead while the user is still talking.
    deadline = time.monotonic() + 60
    while not lite.state.play.done and time.monotonic() < deadline:
        more_pcm, more = run_frames(lite, 1)
        pcm2, events2 = np.concatenate([pcm2, more_pcm]), events2 + more
    assert lite.state.play.done, "the first clause was synthesized ahead"
    turn_end = (len(pcm) + len(pcm2)) // FRAME_SIZE
    pcm3, events3 = run_frames(lite, 80, {0: [TurnEnded("vad", 1)]})
    pcm, events = np.concatenate([pcm, pcm2, pcm3]), events + events2 + events3
    start = first_loud_frame(pcm)
    # Nothing before the turn ended; then at once, in the frame the turn ended.
    assert start == turn_end
    flat = [(i, e) for i, es in enumerate(events) for e in es]
    words = "".join(e.piece for _, e in flat if isinstance(e, AssistantTokenEvent))
    assert words.strip() == "The capital of France is Paris."
    assert [type(e) for _, e in flat if isinstance(e, SpeechStartEvent | SpeechEndEvent)] == [SpeechStartEvent, SpeechEndEvent]
    assert all(e.id is None for _, e in flat if isinstance(e, AssistantTokenEvent))


def test_waits_for_the_re_asked_answer_named_by_the_turn_end(lite):
    signals = {
        0: [OracleReset(1), OracleText(1, "A stale guess.")],
        2: [OracleDone(1), TurnEnded("vad", 2)],  # the final changed things: request 2 answers
        15: [OracleReset(2), OracleText(2, "The right answer."), OracleDone(2)],
    }
    pcm, events = run_frames(lite, 16, signals)
    assert first_loud_frame(pcm[: 15 * FRAME_SIZE]) is None, "nothing before the right answer exists"
    events += run_until_said(lite)
    words = "".join(e.piece for es in events for e in es if isinstance(e, AssistantTokenEvent))
    assert words.strip() == "The right answer."


TURTLE = "Once upon a time a small turtle watched the birds. It dreamed of flying high above the sea."


def test_barge_in_stops_the_output_at_once_and_is_recorded(tts):
    lite = LiteFrontEnd(tts, echo_settle_s=0.0)  # a headset: no echo to wait out
    try:
        signals = {0: [OracleReset(4), OracleText(4, TURTLE), OracleDone(4), TurnEnded("vad", 4)]}
        pcm = run_until_loud(lite, signals)
        assert first_loud_frame(pcm) is not None  # it is talking
        result = lite.step(SILENCE, [UserSpeechStarted()])
        assert BargeInEvent(4) in result.events and SpeechEndEvent("assistant") in result.events
        after, _ = run_frames(lite, 15)
        assert not np.any(result.pcm) and not np.any(after)  # silent from the barge-in frame on
    finally:
        lite.close()


def test_the_first_reply_is_not_interrupted_while_the_echo_canceller_settles(lite):
    signals = {0: [OracleReset(4), OracleText(4, TURTLE), OracleDone(4), TurnEnded("vad", 4)]}
    run_until_loud(lite, signals)  # its first frame of speech
    settle = round(ECHO_SETTLE_S / 0.08)
    for _ in range(settle):  # the echo of an unconverged canceller sounds like a user
        assert not [e for e in lite.step(SILENCE, [UserSpeechStarted()]).events if isinstance(e, BargeInEvent)]
    assert BargeInEvent(4) in lite.step(SILENCE, [UserSpeechStarted()]).events  # from then on, it is one


def test_speaks_at_most_two_sentences_and_ends_at_a_sentence_boundary(lite):
    answer = ["The capital of France is Paris.", "It is known for the Eiffel", "Tower. It also has", "many museums and"]
    signals = {0: [OracleReset(1)] + [OracleText(1, t) for t in answer] + [TurnEnded("vad", 1)]}
    _, events = run_frames(lite, 1, signals)  # no OracleDone: the answer streams on, and is cut
    while lite.state.play.reply is not None or not events[-1]:  # sentence by sentence, to the reply's end
        events += run_until_said(lite)
    words = "".join(e.piece for es in events for e in es if isinstance(e, AssistantTokenEvent))
    assert words.strip() == "The capital of France is Paris. It is known for the Eiffel Tower."


def test_a_request_asked_after_the_turn_ended_replaces_one_with_no_text(lite):
    # The turn ended while the ASR still had the last words; request 1 (asked without them) is
    # superseded before it wrote anything: request 2, asked with them, is the one spoken.
    signals = {0: [TurnEnded("vad", 1)], 2: [OracleReset(2), OracleText(2, "It is Paris."), OracleDone(2)]}
    _, events = run_frames(lite, 3, signals)
    events += run_until_said(lite)
    words = "".join(e.piece for es in events for e in es if isinstance(e, AssistantTokenEvent))
    assert words.strip() == "It is Paris."


def test_auto_picks_lite_without_a_gpu_and_says_why():
    choice = choose_frontend("auto")
    assert choice.kind == "lite" and "GPU" in choice.reason
    assert choose_frontend("auto", checkpoint="some/repo").kind == "kame"
    assert choose_frontend("kame").checkpoint == "SakanaAI/kame"


class CountingTts:
    """A stand-in voice: a little audio per sentence, at once."""

    name = "counting"

    def __init__(self) -> None:
        self.sentences: list[str] = []

    def synthesize(self, text: str) -> np.ndarray:
        self.sentences.append(text)
        return np.full(FRAME_SIZE // 4, 0.1, dtype=np.float32)


def test_an_answer_that_opens_as_the_speculative_one_reuses_its_audio():
    tts = CountingTts()
    frontend = LiteFrontEnd(tts, barge_in=False)
    try:
        speculative = [OracleReset(1), OracleText(1, "A spider has eight legs. They")]
        final = [OracleReset(2), OracleText(2, "A spider has eight legs. Most"), OracleDone(2), TurnEnded("vad", 2)]
        pcm = run_until_loud(frontend, {0: speculative, 5: final})
        events = run_until_said(frontend)
        said = "".join(e.piece for frame in events for e in frame if isinstance(e, AssistantTokenEvent))
        assert first_loud_frame(pcm) is not None and said.split()[-1] == "Most"  # request 2, all of it
        # synthesized ahead for request 1, spoken for request 2: once
        assert tts.sentences == ["A spider has eight legs.", "Most"]
    finally:
        frontend.close()


def test_a_first_sentence_is_spoken_before_the_answer_is_done():
    """The answer's full stop has arrived but not its end (the model writes on): the reply starts."""
    tts = CountingTts()
    frontend = LiteFrontEnd(tts, barge_in=False)
    try:
        signals = {0: [OracleReset(1), OracleText(1, "The capital of France is Paris."), TurnEnded("vad", 1)]}
        pcm = run_until_loud(frontend, signals, limit_s=10)
        assert first_loud_frame(pcm) is not None, "nothing was said before OracleDone"
        assert tts.sentences == ["The capital of France is Paris."]
    finally:
        frontend.close()


def test_the_frame_step_splits_a_bounded_amount_of_text(monkeypatch):
    # A huge answer (no sentence end in sight) used to be re-split whole in every frame step.
    import time

    import kame_desktop.frontend.lite.engine as engine

    scanned: list[int] = []  # characters handed to the splitters by the step (not by each other)
    depth = [0]

    def counting(real):
        def split(text, *args, **kwargs):
            scanned.append(0 if depth[0] else len(text))
            depth[0] += 1
            try:
                return real(text, *args, **kwargs)
            finally:
                depth[0] -= 1

        return split

    for name in ("split_ready", "first_clause"):
        monkeypatch.setattr(engine, name, counting(getattr(engine, name)))
    tts = CountingTts()
    frontend = LiteFrontEnd(tts, barge_in=False)
    answer = "word " * 2000  # 10,000 characters
    try:
        per_step, said = [], []
        signals = {0: [OracleReset(1), OracleText(1, answer), OracleDone(1), TurnEnded("vad", 1)]}
        for i in range(5000):  # until all is said (a busy machine's TTS thread only takes longer)
            if i >= 200 and len("".join(said).split()) >= 2000:
                break
            scanned.clear()
            result = frontend.step(SILENCE, signals.get(i, []))
            per_step.append(sum(scanned))
            said += [e.piece for e in result.events if isinstance(e, AssistantTokenEvent)]
            time.sleep(0.002)  # the TTS thread's turn
        assert max(per_step) <= getattr(engine, "SCAN_CHARS", 600)
        assert per_step[-50:] == [0] * 50  # all handed over: no more splitting work per frame
    finally:
        frontend.close()
    assert "".join(said).split() == answer.split()  # every word was still spoken, in order


def test_a_user_who_goes_on_talking_before_the_reply_sounds_gets_it_at_the_next_turn_end(lite):
    signals = {
        0: [OracleReset(1), OracleText(1, "Half an answer."), OracleDone(1), TurnEnded("vad", 1)],
        1: [UserSpeechStarted()],  # before the TTS has the first clause back: nothing said yet
    }
    pcm, events = run_frames(lite, 2, signals)
    assert first_loud_frame(pcm) is None and not lite.state.play.awaiting_turn and lite.state.play.reply is None
    quiet, more = run_frames(lite, 40)  # the text is ready, the turn is open: it waits
    assert first_loud_frame(quiet) is None
    assert not [e for es in events + more for e in es if isinstance(e, BargeInEvent)]  # nothing was cut
    pcm = run_until_loud(lite, {0: [OracleReset(2), OracleText(2, "The whole answer."), OracleDone(2), TurnEnded("vad", 2)]})
    assert first_loud_frame(pcm) is not None
    words = "".join(e.piece for es in run_until_said(lite) for e in es if isinstance(e, AssistantTokenEvent))
    assert "whole" in words.lower()  # the reply to the whole turn


@pytest.mark.parametrize("streamed", [False, True])
def test_a_long_answer_without_punctuation_reaches_the_tts_in_short_pieces_of_whole_words(streamed):
    # Piper's memory grows steeply with the text of one call (600 characters: 181 MB → 1.6 GB).
    import time

    tts = CountingTts()
    frontend = LiteFrontEnd(tts, barge_in=False)
    words = [f"word{n}" for n in range(250)]  # ~1,900 characters: not one comma or full stop
    if streamed:  # ten words a frame, as an LLM streams them
        signals = {0: [OracleReset(1), TurnEnded("vad", 1)]}
        for k in range(0, len(words), 10):
            signals.setdefault(1 + k // 10, []).append(OracleText(1, " ".join(words[k : k + 10])))
        signals.setdefault(2 + len(words) // 10, []).append(OracleDone(1))
    else:
        signals = {0: [OracleReset(1), OracleText(1, " ".join(words)), OracleDone(1), TurnEnded("vad", 1)]}
    said: list[str] = []
    try:
        for i in range(5000):  # until all is said (a busy machine's TTS thread only takes longer)
            if i > max(signals) and len("".join(said).split()) >= len(words):
                break
            result = frontend.step(SILENCE, signals.get(i, []))
            said += [e.piece for e in result.events if isinstance(e, AssistantTokenEvent)]
            time.sleep(0.002)
    finally:
        frontend.close()
    assert max(map(len, tts.sentences)) <= 200, [len(t) for t in tts.sentences]
    assert " ".join(tts.sentences).split() == words  # cut between words: none split, none lost
    assert "".join(said).split() == words


def test_an_ordinary_long_sentence_streamed_word_by_word_is_spoken_whole():
    # Pieces are for runaway text: a 150-character sentence waits for its full stop and goes to
    # the voice in one piece (a cut in its middle would break its prosody).
    import time

    tts = CountingTts()
    frontend = LiteFrontEnd(tts, barge_in=False)
    second = ("Mount Everest is the tallest mountain above sea level and its summit stands more than eight "
              "thousand eight hundred meters high above the ground today.")
    words = ["Yes."] + second.split()
    signals = {0: [OracleReset(1), TurnEnded("vad", 1)]}
    for k, word in enumerate(words):
        signals[1 + k] = [OracleText(1, word)]
    signals[2 + len(words)] = [OracleDone(1)]
    try:
        for i in range(3000):
            if i > max(signals) and len(" ".join(tts.sentences).split()) >= len(words):
                break
            frontend.step(SILENCE, signals.get(i, []))
            time.sleep(0.002)
    finally:
        frontend.close()
    assert len(second) > 140 and "," not in second
    assert tts.sentences == ["Yes.", second]


PIPER_PEAK = """
import resource, time
import numpy as np
from kame_desktop.events import FRAME_SIZE, AssistantTokenEvent, OracleDone, OracleReset, OracleText, TurnEnded
from kame_desktop.frontend.lite.engine import LiteFrontEnd
from kame_desktop.frontend.lite.tts import PiperTts

answer = " ".join(["the quick brown fox jumps over the lazy dog and then it runs away into the forest"] * 14)
tts = PiperTts(threads=1)
tts.synthesize("Warm up.")
loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
frontend = LiteFrontEnd(tts, barge_in=False)
signals = [OracleReset(1), OracleText(1, answer), OracleDone(1), TurnEnded("vad", 1)]
said, deadline = [], time.monotonic() + 240
while len("".join(said).split()) < len(answer.split()) and time.monotonic() < deadline:
    result = frontend.step(np.zeros(FRAME_SIZE, np.float32), signals)
    signals = []
    said += [e.piece for e in result.events if isinstance(e, AssistantTokenEvent)]
    time.sleep(0.001)
frontend.close()
print(len("".join(said).split()), loaded, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def test_speaking_a_long_answer_without_punctuation_keeps_piper_memory_down():
    # With the real voice: 600-character calls took this answer from 160 MB to 920 MB max RSS
    # here; pieces of whole words stay near a normal answer's (195 MB).
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", PIPER_PEAK], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    words, loaded_kb, peak_kb = map(int, proc.stdout.split())
    assert words == 14 * 17  # all of it was said
    assert peak_kb - loaded_kb < 300_000, f"max RSS {loaded_kb // 1000} → {peak_kb // 1000} MB"
