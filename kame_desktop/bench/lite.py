"""`kame-desktop bench lite`: response latency of the lite front-end, with and without
speculation, and against where we were.

Piper-spoken questions are streamed paced (real time) through the lite front-end with the app's
default embedded back-end (streaming Whisper `auto`, the default in-process LLM — `--llm-model`
and `--asr-model` override — and Piper). response_latency = the end of the user's speech in the
input → the first sample of the answer's speech in the output (a sample counts once a 20 ms
window exceeds −40 dBFS; lite makes no other sound). After one untimed turn per model set (the app has
read its prompt and run every model once), each question runs every arm, back to back:
- the headline: speculation (`reactive`: the answer is written while the user talks) with
  `smart` turn detection;
- `nospec_*`: the same models and turn detection, asking only when the turn is over
  (`end_of_turn`): what speculation buys;
- `baseline_*`: the plain cascade (`end_of_turn` with the `silence` hang-over);
- `previous_*`: the headline's way with Whisper base and Qwen2.5-Coder-0.5B (the defaults
  before issue 23): what the new defaults cost or save.
- `memory_*` (`--memory-items N`): the headline with memory on and N items stored (its own LLM,
  which keeps what it has read as the app's does); every other arm runs with memory off.
ratio = headline ÷ baseline, nospec_ratio = headline ÷ nospec, previous_ratio = headline ÷ previous,
memory_ratio = memory ÷ headline.
heard_wer / previous_heard_wer: the final words heard against the questions' text.
`stages_ms`: medians of the stages after the last word (bench/heard.py): vad, asr, llm first
clause, tts first clause. `word_latency_ms` / `_p90_`: the end of a word → a partial holding it.
`*_turn_end_after_speech_ms`: end of the speech → `turn_end`. `pause_cutoffs`: five questions
spoken with a 600 ms pause before their last word, fed to each turn detector (its decision is
on the audio clock, so no session is needed): how many turns it ended in the pause. The voice
is Piper's, not espeak-ng's: espeak's gaps between words and flat melody are no human's, and
Smart Turn listens to exactly that.
Thread budget (2 cores): whisper 1, llama.cpp the app's default (2; the previous arm 1), Piper 1,
Smart Turn 1 (at pauses only).
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
MODES = {  # name → (policy, turn detection, models: the run's or the previous defaults)
    "smart": ("reactive", "smart", "now"),
    "nospec": ("end_of_turn", "smart", "now"),
    "baseline": ("end_of_turn", "silence", "now"),
    "previous": ("reactive", "smart", "previous"),
    "memory": ("reactive", "smart", "memory"),  # only with --memory-items
}
PREVIOUS = ("base", "qwen2.5-coder-0.5b")  # (whisper, LLM) before issue 23
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
        object.__setattr__(self, "_inner", inner)
        object.__setattr__(self, "busy_s", 0.0)
        for name in methods:
            object.__setattr__(self, name, self._timed(getattr(inner, name)))

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

    def __setattr__(self, name, value):  # the timed methods are the wrapper's; the rest (e.g. `cores`) the provider's
        if name in self.__dict__:
            object.__setattr__(self, name, value)
        else:
            setattr(self._inner, name, value)


def _settings(mode: str, llm_model: str, asr_model: str):
    from kame_desktop.config import AsrSettings, FrontEndSettings, LlmSettings, MemorySettings, Settings

    policy, turn_detection, models = MODES[mode]
    threads = 1 if models == "previous" else LlmSettings().threads  # the previous default: one
    return Settings(
        llm=LlmSettings(threads=threads, policy=policy, gguf_path=llm_model),
        asr=AsrSettings(turn_detection=turn_detection, whisper_model=asr_model),
        frontend=FrontEndSettings(kind="lite"),
        memory=MemorySettings(enabled=models == "memory"),
    )


def run_one(asr, tts, llm, pcm: np.ndarray, settings) -> tuple[np.ndarray, list[Stamped]]:
    """`pcm` streamed paced through a lite session of `settings` with these parts: (the output
    audio, the timeline)."""
    from kame_desktop.assembly import build_session
    from kame_desktop.audio.sources import FileSource

    records: list[Stamped] = []
    bus = EventBus()
    bus.subscribe(records.append)
    session = build_session(settings, bus, asr=asr, llm=llm, tts=tts)
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


def run_bench(questions: int = 10, llm_model: str | None = None, asr_model: str | None = None,
              memory_items: int = 0) -> dict:
    import tempfile
    from pathlib import Path

    from kame_desktop.config import using_data_dir

    with tempfile.TemporaryDirectory() as scratch, using_data_dir(Path(scratch)):  # never the user's timers
        if memory_items:
            from kame_desktop.bench.memory_items import seed

            memory_items = seed(memory_items)
        return _bench(questions, llm_model, asr_model, memory_items)


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def _p90(values: list[float]) -> float | None:
    return round(float(np.percentile(values, 90)), 1) if values else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def _bench(questions: int, llm_model: str | None, asr_model: str | None, memory_items: int = 0) -> dict:
    import asyncio

    import soxr

    from kame_desktop.audio.vad import TURN_HANGOVER_MS, SileroVad
    from kame_desktop.backend.asr.whisper import WhisperAsr
    from kame_desktop.backend.factory import make_llm
    from kame_desktop.backend.llm.local import DEFAULT_EMBEDDED
    from kame_desktop.backend.turn import MAX_SILENCE_MS, SMART_THRESHOLD, TurnDetector
    from kame_desktop.bench.heard import stages_ms, vad_pause_after_s, word_latencies_ms
    from kame_desktop.bench.speech import QUESTIONS
    from kame_desktop.config import AsrSettings, LlmSettings
    from kame_desktop.evaluation.scoring import heard_text, heard_wer
    from kame_desktop.frontend.lite.tts import PiperTts

    models = {"now": (asr_model or AsrSettings().whisper_model, llm_model or DEFAULT_EMBEDDED), "previous": PREVIOUS}
    modes = {mode: how for mode, how in MODES.items() if mode != "memory" or memory_items}
    if memory_items:
        models["memory"] = models["now"]
    asrs = {key: Timed(WhisperAsr(whisper, cpu_threads=1), "feed", "flush", "end_turn") for key, (whisper, _) in models.items()}
    piper = PiperTts(threads=1)
    tts = Timed(piper, "synthesize")
    tts_audio_s = 0.0

    def synthesize(text: str) -> np.ndarray:
        nonlocal tts_audio_s
        audio = piper.synthesize(text)
        tts_audio_s += len(audio) / SAMPLE_RATE
        return audio

    tts.synthesize = tts._timed(synthesize)
    # One model per LLM, kept across the runs as the app keeps it: the system prompt is read
    # once, not at every question.
    llms = {key: make_llm(_settings(next(m for m in MODES if MODES[m][2] == key), llm, whisper))
            for key, (whisper, llm) in models.items()}
    results: dict[str, list[dict]] = {mode: [] for mode in modes}
    turn_end_ms: dict[str, list[float]] = {mode: [] for mode in modes}
    stages: dict[str, list[float]] = {"vad": [], "asr": [], "llm": [], "tts": []}
    word_ms: list[float] = []
    heard: dict[str, list[tuple[str, str]]] = {"now": [], "previous": []}
    smart_ends: list[TurnEndEvent] = []
    input_s = dict.fromkeys(models, 0.0)
    vad = SileroVad()
    # One untimed turn per model set first, as in an app that has been open a while: the LLM has
    # read its system prompt (at a session's start it reads it then, seconds for the 1.5B, and
    # the first question would wait for that) and every model has run once.
    for key, (whisper, llm_name) in models.items():
        mode = next(m for m, how in modes.items() if how[2] == key)
        run_one(asrs[key], tts, llms[key], piper.synthesize(QUESTIONS[-1]), _settings(mode, llm_name, whisper))
    for timed in (*asrs.values(), tts):
        timed.busy_s = 0.0
    tts_audio_s = 0.0
    for text in QUESTIONS[:questions]:
        pcm = piper.synthesize(text)
        end = speech_end_s(pcm)
        vad_s = vad_pause_after_s(vad, pcm, end)
        words = asrs["now"].word_times(soxr.resample(pcm, SAMPLE_RATE, asrs["now"].RATE))
        for mode, (_, _, key) in modes.items():  # same utterance, every way, back to back
            whisper, llm_name = models[key]
            out, records = run_one(asrs[key], tts, llms[key], pcm, _settings(mode, llm_name, whisper))
            input_s[key] += len(pcm) / SAMPLE_RATE + TAIL_SECONDS
            answer = first_sound_after_s(out, end)
            ends = [r for r in records if isinstance(r.event, TurnEndEvent)]
            if ends:
                turn_end_ms[mode].append((ends[0].t - end) * 1000)
                if mode == "smart":
                    smart_ends.append(ends[0].event)
            latency = None if answer is None else round((answer - end) * 1000, 1)
            said = "".join(r.event.piece for r in records if r.event.kind == "assistant_token").strip()
            heard_words = heard_text(records)
            log.info("%s %r (heard %r) → %s ms: %r", mode, text, heard_words, latency, said)
            results[mode].append({"question": text, "heard": heard_words, "response_latency_ms": latency, "answer": said})
            if mode in ("smart", "previous"):
                heard[key].append((text, heard_words))
            if mode == "smart":
                for stage, ms in stages_ms(records, end, vad_s).items():
                    if ms is not None:
                        stages[stage].append(ms)
                word_ms += word_latencies_ms(records, [w.end for w in words])

    cutoffs = {}
    for mode in ("smart", "silence"):
        detector = TurnDetector(mode)
        cutoffs[mode] = 0
        for text in PAUSED_QUESTIONS:
            pcm, resumed = paused(asrs["now"], piper, text)
            ends = turn_ends(detector, pcm)
            cutoffs[mode] += any(t < resumed for t, _ in ends)
            if mode == "smart":
                smart_ends += [e for _, e in ends]
            log.info("pause %s %r: turn ends at %s s (speech resumes at %.2f s)", mode, text, [t for t, _ in ends], resumed)

    for llm in llms.values():
        asyncio.run(llm.aclose())

    def latencies(mode: str) -> list[float]:
        return [u["response_latency_ms"] for u in results[mode] if u["response_latency_ms"] is not None]

    ours = _median(latencies("smart"))
    figures: dict = {"median_response_latency_ms": ours, "p90_response_latency_ms": _p90(latencies("smart")),
                     "answered": f"{len(latencies('smart'))}/{len(results['smart'])}"}
    for mode in ("nospec", "baseline", "previous", *(("memory",) if memory_items else ())):
        figures[f"{mode}_median_response_latency_ms"] = _median(latencies(mode))
        figures[f"{mode}_p90_response_latency_ms"] = _p90(latencies(mode))
        figures[f"{mode}_answered"] = f"{len(latencies(mode))}/{len(results[mode])}"
    fallbacks = sum(e.probability is None or e.probability < SMART_THRESHOLD for e in smart_ends)
    return {
        **figures,
        "ratio": _ratio(ours, figures["baseline_median_response_latency_ms"]),
        "nospec_ratio": _ratio(ours, figures["nospec_median_response_latency_ms"]),
        "previous_ratio": _ratio(ours, figures["previous_median_response_latency_ms"]),
        **({"memory_ratio": _ratio(figures["memory_median_response_latency_ms"], ours), "memory_items": memory_items}
           if memory_items else {}),
        "heard_wer": heard_wer(heard["now"]),
        "previous_heard_wer": heard_wer(heard["previous"]),
        "stages_ms": {stage: _median(values) for stage, values in stages.items()},
        "word_latency_ms": _median(word_ms),
        "word_latency_p90_ms": _p90(word_ms),
        "smart_turn_end_after_speech_ms": _median(turn_end_ms["smart"]),
        "baseline_turn_end_after_speech_ms": _median(turn_end_ms["baseline"]),
        "pause_cutoffs": cutoffs,
        "pause_questions": len(PAUSED_QUESTIONS),
        "smart_fallbacks": f"{fallbacks}/{len(smart_ends)}",  # turns the maximum silence ended
        "vad_hangover_ms": TURN_HANGOVER_MS,
        "smart_max_silence_ms": MAX_SILENCE_MS,
        "asr_model": models["now"][0],
        "llm_model": models["now"][1],
        "previous_models": {"asr": PREVIOUS[0], "llm": PREVIOUS[1]},
        "asr_rtf": {key: round(a.busy_s / input_s[key], 3) for key, a in asrs.items()},
        "tts_rtf": round(tts.busy_s / tts_audio_s, 3) if tts_audio_s else None,
        "questions": results,
        "threads": {"whisper": 1, "llama": LlmSettings().threads, "previous_llama": 1, "piper": 1, "smart_turn": 1},
        "frame_ms": FRAME_SECONDS * 1000,
        "machine": {"platform": platform.platform()},
    }
