"""The lite companion end to end, paced, with the embedded back-end (`run --frontend lite`, and the
session it builds): the answer is right and spoken, and a user who talks over it stops it within
200 ms."""

from __future__ import annotations

import difflib
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kame_desktop.audio.files import read_audio, write_wav
from kame_desktop.bench.lite import loud_windows, speech_end_s
from kame_desktop.bench.speech import speak
from kame_desktop.events import FRAME_SECONDS, FRAME_SIZE, SAMPLE_RATE, read_timeline


def run_lite(tmp_path: Path, pcm: np.ndarray, tail: float) -> tuple[np.ndarray, list]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    question = tmp_path / "question.wav"
    write_wav(question, pcm)
    out, timeline = tmp_path / "answer.wav", tmp_path / "timeline.jsonl"
    cmd = [sys.executable, "-m", "kame_desktop", "run", "--frontend", "lite", "--input", str(question),
           "--output", str(out), "--timeline", str(timeline), "--tail", str(tail)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return read_audio(out), read_timeline(timeline)


def transcribe(pcm: np.ndarray) -> str:
    import soxr
    from faster_whisper import WhisperModel

    from kame_desktop.models.embedded import embedded_whisper_model

    model = WhisperModel(str(embedded_whisper_model()), device="cpu", compute_type="int8", cpu_threads=2)
    segments, _ = model.transcribe(soxr.resample(pcm, SAMPLE_RATE, 16_000), language="en", beam_size=1)
    return " ".join(s.text for s in segments)


def similarity(heard: str, spoken: str) -> float:
    """How alike the starts of what was heard and what was spoken are (0..1), letters and
    digits only, over the shorter one's length and two letters more: the run may end before a
    long reply has been said to its end, the small Whisper that checks it may drop a letter or
    repeat a short reply ("Paris" heard as "Paris Paris")."""
    a, b = (" ".join(re.findall(r"[a-z0-9']+", t.lower())) for t in (heard, spoken))
    n = min(len(a), len(b)) + 2
    return difflib.SequenceMatcher(None, a[:n], b[:n]).ratio() if a and b else 0.0


def test_lite_answers_the_capital_of_france(tmp_path):
    question = speak("What is the capital of France?")
    answer, records = run_lite(tmp_path, question, tail=8.0)
    kinds = {r.event.kind for r in records}
    assert {"asr_partial", "asr_final", "llm_request", "llm_chunk", "assistant_token", "turn_end"} <= kinds
    assert records[0].event.kind == "session_start" and records[0].event.frontend == "lite"
    spoken = "".join(r.event.piece for r in records if r.event.kind == "assistant_token")
    assert "Paris" in spoken
    # The audio says what the text says; the small Whisper that checks it may mishear a word
    # ("France is Paris" → "Francis Paritz", "Paris" → "Harris"), so compare letters, not words.
    heard = transcribe(answer[len(question) // 2 :])  # the answer comes after the question
    assert heard.strip() and similarity(heard, spoken) >= 0.7, (heard, spoken)


class TalksOver:
    """The microphone and speaker of a user who asks `first`, waits for the reply and talks over
    it (`second`) once it has played for `into_reply_s`, then listens for `tail_s`: paced at
    real time, but the interruption is placed on the audio clock, after the reply's first
    sound, however long this machine took to start it."""

    def __init__(self, first: np.ndarray, second: np.ndarray, into_reply_s: float = 1.5,
                 tail_s: float = 3.0, wait_s: float = 30.0) -> None:
        from kame_desktop.audio.sources import _Pacer

        self.first, self.second = first, second
        self.pacer, self.frame = _Pacer(), 0
        self.out: list[np.ndarray] = []
        self.reply_frame: int | None = None  # the output's first loud frame after the question
        self.second_frame: int | None = None  # where the second utterance starts in the input
        self.into_reply = round(into_reply_s / FRAME_SECONDS)
        self.tail, self.wait = round(tail_s / FRAME_SECONDS), round(wait_s / FRAME_SECONDS)
        self.first_frames = -(-len(first) // FRAME_SIZE)

    def read(self) -> np.ndarray | None:
        self.pacer.wait(self.frame)
        i, self.frame = self.frame, self.frame + 1
        if self.second_frame is None and self.reply_frame is not None and i >= self.reply_frame + self.into_reply:
            self.second_frame = i
        if self.second_frame is not None:
            pcm, at = self.second, self.second_frame
            if i >= at + -(-len(pcm) // FRAME_SIZE) + self.tail:
                return None
        else:
            pcm, at = self.first, 0
            if i >= self.first_frames + self.wait:
                return None  # no reply: the assertions say so
        frame = np.zeros(FRAME_SIZE, np.float32)
        chunk = pcm[(i - at) * FRAME_SIZE : (i - at + 1) * FRAME_SIZE]
        frame[: len(chunk)] = chunk
        return frame

    def write(self, frame: np.ndarray) -> None:
        if self.reply_frame is None and len(self.out) >= self.first_frames and len(loud_windows(frame)):
            self.reply_frame = len(self.out)
        self.out.append(frame)

    def close(self) -> None:
        pass


def test_barge_in_stops_the_reply_within_200_ms():
    from kame_desktop.assembly import build_session, run_settings
    from kame_desktop.events import EventBus

    first = speak("Can you tell me a long story about a little turtle who wanted to fly?")
    second = speak("Wait, stop, tell me about birds instead.")
    user = TalksOver(first, second)  # 1.5 s into the reply: past the first reply's ECHO_SETTLE_S
    records = []
    bus = EventBus()
    bus.subscribe(records.append)
    session = build_session(run_settings(frontend="lite"), bus)  # what `run --frontend lite` builds
    try:
        session.run(user, user)
    finally:
        session.close()
    assert user.second_frame is not None, "the first question got no spoken reply"
    answer = np.concatenate(user.out)
    onset = user.second_frame * FRAME_SECONDS + loud_windows(second)[0] * 0.02
    loud = loud_windows(answer) * 0.02
    assert np.any((loud > onset - 0.3) & (loud < onset)), "the reply was not playing when the user spoke again"
    # The barge-in is judged on the audio clock (frames), so these hold on a slow machine too.
    barge = [r for r in records if r.event.kind == "barge_in"]
    assert barge and barge[0].t <= onset + 0.2, (barge, onset)
    second_end = onset + speech_end_s(second) - loud_windows(second)[0] * 0.02
    assert not np.any((loud >= onset + 0.2) & (loud < second_end)), "output went on after the barge-in"


@pytest.mark.parametrize("bad", ["--frontend", "--policy"])
def test_bad_choices_are_one_line_errors(tmp_path, bad):
    write_wav(tmp_path / "q.wav", np.zeros(SAMPLE_RATE, dtype=np.float32))
    cmd = [sys.executable, "-m", "kame_desktop", "run", "--input", str(tmp_path / "q.wav"), "--output",
           str(tmp_path / "a.wav"), bad, "nonsense", "--llm", "local"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("error:") and len(proc.stderr.strip().splitlines()) == 1
