"""`kame-desktop bench lite`: response latency of the lite front-end, with and without
speculation.

espeak-ng questions are streamed paced (real time) through the lite front-end with the
embedded back-end (streaming whisper, in-process SmolLM2, Piper). response_latency = the end of
the user's speech in the input → the first sample of the answer's speech in the output (a sample
counts once a 20 ms window exceeds −40 dBFS; lite makes no other sound). The same questions run
with speculation (`reactive`: the answer is being written while the user talks) and without
(`end_of_turn`: ask only when the turn is over, a plain cascade); ratio = speculative ÷ baseline.
The VAD's end-of-turn hang-over, part of every latency, is reported on its own.
Thread budget (2 cores): whisper 1, llama.cpp 1, Piper 1.
"""

from __future__ import annotations

import logging
import platform
import statistics
import time

import numpy as np

from kame_desktop.events import FRAME_SECONDS, SAMPLE_RATE, EventBus, Stamped, TurnEndEvent

log = logging.getLogger(__name__)

TAIL_SECONDS = 4.0
WINDOW = SAMPLE_RATE // 50  # 20 ms
THRESHOLD = 10 ** (-40 / 20)  # −40 dBFS (RMS of the window)


def loud_windows(pcm: np.ndarray) -> np.ndarray:
    """Indices of the 20 ms windows louder than −40 dBFS."""
    n = len(pcm) // WINDOW
    rms = np.sqrt(np.mean(pcm[: n * WINDOW].reshape(n, WINDOW) ** 2, axis=1))
    return np.flatnonzero(rms > THRESHOLD)


def speech_end_s(pcm: np.ndarray) -> float:
    loud = loud_windows(pcm)
    return float((loud[-1] + 1) * WINDOW / SAMPLE_RATE) if len(loud) else 0.0


def first_sound_after_s(pcm: np.ndarray, after_s: float) -> float | None:
    loud = loud_windows(pcm)
    later = loud[loud * WINDOW / SAMPLE_RATE >= after_s]
    return float(later[0] * WINDOW / SAMPLE_RATE) if len(later) else None


class Timed:
    """Wraps a provider and adds up the wall time spent in the named methods."""

    def __init__(self, inner, *methods: str) -> None:
        self._inner = inner
        self.busy_s = 0.0
        for name in methods:
            setattr(self, name, self._timed(getattr(inner, name)))

    def _timed(self, method):
        def call(*args, **kwargs):
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.busy_s += time.perf_counter() - start

        return call

    def __getattr__(self, name):
        return getattr(self._inner, name)


def _run_one(asr, tts, pcm: np.ndarray, policy: str) -> tuple[np.ndarray, list[Stamped]]:
    from kame_desktop.assembly import build_session
    from kame_desktop.audio.sources import FileSource
    from kame_desktop.config import FrontEndSettings, LlmSettings, Settings

    records: list[Stamped] = []
    bus = EventBus()
    bus.subscribe(records.append)
    settings = Settings(llm=LlmSettings(threads=1, policy=policy), frontend=FrontEndSettings(kind="lite"))
    session = build_session(settings, bus, asr=asr, tts=tts)
    out: list[np.ndarray] = []

    class Collect:
        write = out.append

        def close(self) -> None:
            pass

    try:
        session.run(FileSource(pcm, TAIL_SECONDS, realtime=True), Collect())
    finally:
        session.close()
    return np.concatenate(out), records


def run_bench(questions: int = 10) -> dict:
    from kame_desktop.audio.vad import TURN_HANGOVER_MS
    from kame_desktop.backend.asr.whisper import WhisperAsr
    from kame_desktop.bench.speech import QUESTIONS, speak
    from kame_desktop.frontend.lite.tts import PiperTts

    asr = Timed(WhisperAsr(cpu_threads=1), "feed", "flush")
    tts = Timed(PiperTts(threads=1), "synthesize")
    tts_audio_s = 0.0
    original_synthesize = tts.synthesize

    def synthesize(text: str) -> np.ndarray:
        nonlocal tts_audio_s
        audio = original_synthesize(text)
        tts_audio_s += len(audio) / SAMPLE_RATE
        return audio

    tts.synthesize = synthesize
    results: dict[str, list[dict]] = {"reactive": [], "end_of_turn": []}
    hangovers, input_s = [], 0.0
    for text in QUESTIONS[:questions]:
        pcm = speak(text)
        end = speech_end_s(pcm)
        for policy in results:  # same utterance, both ways, back to back
            out, records = _run_one(asr, tts, pcm, policy)
            input_s += len(pcm) / SAMPLE_RATE + TAIL_SECONDS
            answer = first_sound_after_s(out, end)
            turn_ends = [r.t for r in records if isinstance(r.event, TurnEndEvent)]
            if turn_ends:
                hangovers.append((turn_ends[0] - end) * 1000)
            latency = None if answer is None else round((answer - end) * 1000, 1)
            said = "".join(r.event.piece for r in records if r.event.kind == "assistant_token").strip()
            log.info("%s %r → %s ms: %r", policy, text, latency, said)
            results[policy].append({"question": text, "response_latency_ms": latency, "answer": said})

    def latencies(policy: str) -> list[float]:
        return [u["response_latency_ms"] for u in results[policy] if u["response_latency_ms"] is not None]

    def p90(values: list[float]) -> float | None:
        return round(float(np.percentile(values, 90)), 1) if values else None

    ours, base = latencies("reactive"), latencies("end_of_turn")
    median = round(statistics.median(ours), 1) if ours else None
    baseline = round(statistics.median(base), 1) if base else None
    return {
        "median_response_latency_ms": median,
        "p90_response_latency_ms": p90(ours),
        "baseline_median_response_latency_ms": baseline,
        "baseline_p90_response_latency_ms": p90(base),
        "ratio": round(median / baseline, 3) if median and baseline else None,
        "answered": f"{len(ours)}/{len(results['reactive'])}",
        "baseline_answered": f"{len(base)}/{len(results['end_of_turn'])}",
        "vad_hangover_ms": TURN_HANGOVER_MS,
        "measured_turn_end_after_speech_ms": round(statistics.median(hangovers), 1) if hangovers else None,
        "asr_rtf": round(asr.busy_s / input_s, 3),
        "tts_rtf": round(tts.busy_s / tts_audio_s, 3) if tts_audio_s else None,
        "questions": results,
        "threads": {"whisper": 1, "llama": 1, "piper": 1},
        "frame_ms": FRAME_SECONDS * 1000,
        "machine": {"platform": platform.platform()},
    }
