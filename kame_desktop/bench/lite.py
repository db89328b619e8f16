"""`kame-desktop bench lite`: response latency of the lite front-end, with and without
speculation, and with either turn detection.

Piper-spoken questions are streamed paced (real time) through the lite front-end with the
embedded back-end (streaming whisper, in-process SmolLM2-135M whatever the app's default LLM,
Piper). response_latency = the end of the user's speech in the input → the first sample of the
answer's speech in the output (a sample counts once a 20 ms window exceeds −40 dBFS; lite makes
no other sound). Each question runs three ways, back to back: speculation (`reactive`: the
answer is written while the user talks) with `smart` turn detection (the headline figures),
the same with `silence` (`silence_*`: the fixed hang-over), the plain cascade (`baseline_*`:
`end_of_turn`, ask only when the turn is over, with `silence`), and the headline's way with no
tools offered to the LLM (`notools_*`); ratio = headline ÷ baseline, tools_ratio = headline ÷ notools.
`*_turn_end_after_speech_ms`: end of the speech → `turn_end`, the share of the latency spent
deciding the user has finished. `pause_cutoffs`: five questions spoken with a 600 ms pause before
their last word, fed to each turn detector (its decision is on the audio clock, so no session is
needed): how many turns it ended in the pause. The voice is Piper's, not espeak-ng's: espeak's
gaps between words and flat melody are no human's, and Smart Turn listens to exactly that.
Thread budget (2 cores): whisper 1, llama.cpp 1, Piper 1, Smart Turn 1 (at pauses only).
"""

from __future__ import annotations

import logging
import platform
import statistics
import time

import numpy as np

from kame_desktop.events import FRAME_SECONDS, FRAME_SIZE, SAMPLE_RATE, EventBus, Stamped, TurnEndEvent

log = logging.getLogger(__name__)

TAIL_SECONDS = 4.0
PAUSE_S = 0.6
PAUSED_QUESTIONS = (  # (said, pause, last word)
    "What is the capital of France?",
    "Please tell me the weather for tomorrow.",
    "How many people live in London?",
    "Where can I buy a new pair of shoes?",
    "Recommend a good movie for the weekend.",
)
MODES = {  # name → (policy, turn detection, the built-in tools offered)
    "smart": ("reactive", "smart", True),
    "silence": ("reactive", "silence", True),
    "baseline": ("end_of_turn", "silence", True),
    "notools": ("reactive", "smart", False),  # what offering the tools costs (SmolLM2's template lists none)
}
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


def _settings(mode: str, llm_model: str):
    from kame_desktop.config import AsrSettings, FrontEndSettings, LlmSettings, Settings, ToolSettings

    policy, turn_detection, tools = MODES[mode]
    return Settings(
        llm=LlmSettings(threads=1, policy=policy, gguf_path=llm_model),
        asr=AsrSettings(turn_detection=turn_detection),
        frontend=FrontEndSettings(kind="lite"),
        tools=ToolSettings(enabled=tools),
    )


def _run_one(asr, tts, llm, pcm: np.ndarray, mode: str, llm_model: str) -> tuple[np.ndarray, list[Stamped]]:
    from kame_desktop.assembly import build_session
    from kame_desktop.audio.sources import FileSource

    records: list[Stamped] = []
    bus = EventBus()
    bus.subscribe(records.append)
    session = build_session(_settings(mode, llm_model), bus, asr=asr, llm=llm, tts=tts)
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


def paused(asr, piper, text: str, pause_s: float = PAUSE_S) -> tuple[np.ndarray, float]:
    """`text` spoken with a `pause_s` silence before its last word, and where the pause ends (s)."""
    import soxr

    audio = piper.synthesize(text)
    words = asr.word_times(soxr.resample(audio, SAMPLE_RATE, asr.RATE))
    cut = round(words[-1].start * SAMPLE_RATE)
    pcm = np.concatenate([audio[:cut], np.zeros(round(pause_s * SAMPLE_RATE), np.float32), audio[cut:]])
    return pcm, cut / SAMPLE_RATE + pause_s


def turn_ends(detector, pcm: np.ndarray) -> list[tuple[float, TurnEndEvent]]:
    """(time, event) of each turn end the detector finds in `pcm` (80 ms frames, then 1.5 s of silence)."""
    detector.reset()
    pcm = np.concatenate([pcm, np.zeros(round(1.5 * SAMPLE_RATE), np.float32)])
    ends = []
    for i in range(0, len(pcm), FRAME_SIZE):
        t = min(i + FRAME_SIZE, len(pcm)) / SAMPLE_RATE
        ends += [(t, e) for e in detector.feed(pcm[i : i + FRAME_SIZE], t) if isinstance(e, TurnEndEvent)]
    return ends


def run_bench(questions: int = 10, llm_model: str | None = None) -> dict:
    import tempfile
    from pathlib import Path

    from kame_desktop.config import using_data_dir

    with tempfile.TemporaryDirectory() as scratch, using_data_dir(Path(scratch)):  # never the user's timers
        return _bench(questions, llm_model)


def _bench(questions: int, llm_model: str | None) -> dict:
    from kame_desktop.audio.vad import TURN_HANGOVER_MS
    from kame_desktop.backend.asr.whisper import WhisperAsr
    from kame_desktop.backend.llm.local import SMOLLM2
    from kame_desktop.backend.turn import MAX_SILENCE_MS, SMART_THRESHOLD, TurnDetector
    from kame_desktop.bench.speech import QUESTIONS
    from kame_desktop.frontend.lite.tts import PiperTts

    llm_model = llm_model or SMOLLM2  # the yardstick this benchmark has always used, whatever the app's default
    asr = Timed(WhisperAsr(cpu_threads=1), "feed", "flush", "end_turn")
    piper = PiperTts(threads=1)
    tts = Timed(piper, "synthesize")
    tts_audio_s = 0.0

    def synthesize(text: str) -> np.ndarray:
        nonlocal tts_audio_s
        audio = piper.synthesize(text)
        tts_audio_s += len(audio) / SAMPLE_RATE
        return audio

    tts.synthesize = tts._timed(synthesize)
    # One model per prompt (with the tools listed, and without), kept across the runs as the app
    # keeps it: the system prompt is read once, not at every question.
    from kame_desktop.backend.factory import make_llm

    llms = {tools: make_llm(_settings(next(m for m in MODES if MODES[m][2] == tools), llm_model))
            for tools in {t for _, _, t in MODES.values()}}
    results: dict[str, list[dict]] = {mode: [] for mode in MODES}
    turn_end_ms: dict[str, list[float]] = {mode: [] for mode in MODES}
    smart_ends: list[TurnEndEvent] = []
    input_s = 0.0
    for text in QUESTIONS[:questions]:
        pcm = piper.synthesize(text)
        end = speech_end_s(pcm)
        for mode in MODES:  # same utterance, every way, back to back
            out, records = _run_one(asr, tts, llms[MODES[mode][2]], pcm, mode, llm_model)
            input_s += len(pcm) / SAMPLE_RATE + TAIL_SECONDS
            answer = first_sound_after_s(out, end)
            ends = [r for r in records if isinstance(r.event, TurnEndEvent)]
            if ends:
                turn_end_ms[mode].append((ends[0].t - end) * 1000)
                if mode == "smart":
                    smart_ends.append(ends[0].event)
            latency = None if answer is None else round((answer - end) * 1000, 1)
            said = "".join(r.event.piece for r in records if r.event.kind == "assistant_token").strip()
            log.info("%s %r → %s ms: %r", mode, text, latency, said)
            results[mode].append({"question": text, "response_latency_ms": latency, "answer": said})

    cutoffs = {}
    for mode in ("smart", "silence"):
        detector = TurnDetector(mode)
        cutoffs[mode] = 0
        for text in PAUSED_QUESTIONS:
            pcm, resumed = paused(asr, piper, text)
            ends = turn_ends(detector, pcm)
            cutoffs[mode] += any(t < resumed for t, _ in ends)
            if mode == "smart":
                smart_ends += [e for _, e in ends]
            log.info("pause %s %r: turn ends at %s s (speech resumes at %.2f s)", mode, text, [t for t, _ in ends], resumed)

    import asyncio

    for llm in llms.values():
        asyncio.run(llm.aclose())

    def latencies(mode: str) -> list[float]:
        return [u["response_latency_ms"] for u in results[mode] if u["response_latency_ms"] is not None]

    def median(values: list[float]) -> float | None:
        return round(statistics.median(values), 1) if values else None

    def p90(values: list[float]) -> float | None:
        return round(float(np.percentile(values, 90)), 1) if values else None

    ours, base = latencies("smart"), latencies("baseline")
    fallbacks = sum(e.probability is None or e.probability < SMART_THRESHOLD for e in smart_ends)
    return {
        "median_response_latency_ms": median(ours),
        "p90_response_latency_ms": p90(ours),
        "silence_median_response_latency_ms": median(latencies("silence")),
        "silence_p90_response_latency_ms": p90(latencies("silence")),
        "baseline_median_response_latency_ms": median(base),
        "baseline_p90_response_latency_ms": p90(base),
        "ratio": round(median(ours) / median(base), 3) if ours and base else None,
        "notools_median_response_latency_ms": median(latencies("notools")),
        "notools_answered": f"{len(latencies('notools'))}/{len(results['notools'])}",
        "tools_ratio": round(median(ours) / median(latencies("notools")), 3) if ours and latencies("notools") else None,
        "answered": f"{len(ours)}/{len(results['smart'])}",
        "silence_answered": f"{len(latencies('silence'))}/{len(results['silence'])}",
        "baseline_answered": f"{len(base)}/{len(results['baseline'])}",
        "smart_turn_end_after_speech_ms": median(turn_end_ms["smart"]),
        "silence_turn_end_after_speech_ms": median(turn_end_ms["silence"]),
        "baseline_turn_end_after_speech_ms": median(turn_end_ms["baseline"]),
        "pause_cutoffs": cutoffs,
        "pause_questions": len(PAUSED_QUESTIONS),
        "smart_fallbacks": f"{fallbacks}/{len(smart_ends)}",  # turns the maximum silence ended
        "vad_hangover_ms": TURN_HANGOVER_MS,
        "smart_max_silence_ms": MAX_SILENCE_MS,
        "llm_model": llm_model,
        "asr_rtf": round(asr.busy_s / input_s, 3),
        "tts_rtf": round(tts.busy_s / tts_audio_s, 3) if tts_audio_s else None,
        "questions": results,
        "threads": {"whisper": 1, "llama": 1, "piper": 1, "smart_turn": 1},
        "frame_ms": FRAME_SECONDS * 1000,
        "machine": {"platform": platform.platform()},
    }
