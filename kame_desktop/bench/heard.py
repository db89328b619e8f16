"""When the back-end heard what, from a session's timeline: the measures `bench lite` and
`bench oracle-lag` share (what it heard, `heard_text`/`heard_wer`, is scored in
`evaluation/scoring.py`).

- word latency: the end of a word in the audio → the first partial or final that holds it;
- the stages after the user's last word: the VAD noticing the pause, the recognizer's words,
  the LLM's first clause of the answer that is played, the TTS's first sound.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np

from kame_desktop.events import (
    AsrFinalEvent,
    AsrPartialEvent,
    AsrUnclearEvent,
    LlmAdoptedEvent,
    LlmChunkEvent,
    LlmRequestEvent,
    SpeechStartEvent,
    Stamped,
)

_CLAUSE_END = re.compile(r"[.!?;:,]\s|[.!?]$")  # where the lite front-end may start speaking


def word_latencies_ms(records: Iterable[Stamped], word_ends: Sequence[float]) -> list[float]:
    """Per word said (its end on the session clock), the time until a partial or final held it:
    the first ASR event after which the words heard so far (committed + the latest partial)
    number more than its index. Words never heard have none."""
    committed, partial, lat = 0, 0, []
    k = 0
    for r in records:
        if isinstance(r.event, AsrFinalEvent):
            committed, partial = committed + len(r.event.text.split()), 0
        elif isinstance(r.event, AsrPartialEvent):
            partial = len(r.event.text.split())
        else:
            continue
        while k < len(word_ends) and committed + partial > k:
            lat.append(round(max(0.0, r.t - word_ends[k]) * 1000, 1))
            k += 1
    return lat


def vad_pause_after_s(vad, pcm24k: np.ndarray, speech_end: float, chunk_s: float = 0.08) -> float | None:
    """How long after `speech_end` the VAD, fed `pcm24k` in 80 ms chunks, knows the user pauses
    (its silence start is set, and the recognizer's pause pass would run: whisper.py's rule)."""
    import soxr

    from kame_desktop.audio.vad import SAMPLE_RATE as RATE
    from kame_desktop.backend.asr.whisper import PAUSE_TAIL_S

    vad.reset()
    pcm = soxr.resample(pcm24k, 24000, RATE).astype(np.float32)
    step = round(chunk_s * RATE)
    for i in range(0, len(pcm), step):
        vad.process(pcm[i : i + step])
        t = vad.received / RATE
        silence = vad.silence_start
        if t > speech_end and silence is not None and vad.received >= silence + PAUSE_TAIL_S * RATE:
            return round(t - speech_end, 3)
    return None


def stages_ms(records: Sequence[Stamped], speech_end: float, vad_s: float | None) -> dict[str, float | None]:
    """The stages after the last word, each from the end of the one before (frame resolution):
    vad (the VAD knows the user pauses), asr (the played answer is asked: its words are heard;
    0 when it was asked before the pause was noticed), llm (its first clause is written; 0 when
    that was before it was asked: it was), tts (its first sound)."""
    audio = next((r.t for r in records if isinstance(r.event, SpeechStartEvent) and r.event.source == "assistant"
                  and r.t >= speech_end), None)
    played = max((r.event.request for r in records if isinstance(r.event, LlmAdoptedEvent)
                  and audio is not None and r.t <= audio), default=None)
    if played is None or vad_s is None or any(isinstance(r.event, AsrUnclearEvent) for r in records):
        return {"vad": vad_s and round(vad_s * 1000, 1), "asr": None, "llm": None, "tts": None}
    asked = next(r.t for r in records if isinstance(r.event, LlmRequestEvent) and r.event.request == played)
    text, clause = "", audio
    for r in records:
        if isinstance(r.event, LlmChunkEvent) and r.event.request == played:
            text += r.event.text
            if _CLAUSE_END.search(text):
                clause = min(r.t, audio)
                break
    vad_t = speech_end + vad_s
    words = max(asked, vad_t)
    written = max(clause, words)
    return {"vad": round(vad_s * 1000, 1), "asr": round((words - vad_t) * 1000, 1),
            "llm": round((written - words) * 1000, 1), "tts": round((audio - written) * 1000, 1)}
