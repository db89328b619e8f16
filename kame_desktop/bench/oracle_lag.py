"""`kame-desktop bench oracle-lag`: how soon the oracle carries what the user just said.

espeak-ng speech is streamed paced (real time) through the tiny KAME front-end with the
embedded back-end (streaming whisper + the in-process SmolLM2), once per policy: `reactive`
(ours) and `polling` (the reference's, the baseline). For every recognised user word,
oracle_lag = the time the word ended in the audio (its ASR timestamp) → the first oracle token
the front-end was fed from a request that included that word. ratio = reactive ÷ polling.

oracle_gap_share: of the frames from the user's first word to the last oracle token, among those
in which a request was live, the share fed no oracle token (PAD): the front-end without guidance
while an answer was on its way. With an OpenAI-compatible server (`--llm-url`, or
`--scripted-llm`: a scripted cloud LLM on 127.0.0.1 with a 300–900 ms first token and 40 words/s)
the arms overlap answers and adopt one on its first text (spec §3.3b), and a third arm, `cancel`
(reactive, max_streams 1), cancels at ask: `cancel_oracle_gap_share` and `cancel_median_oracle_lag_ms`.
What is spoken: short questions and longer requests in turn (12 by default, six of each). A short
question re-asks once or twice, so its gap is mostly the first answer's wait, which no policy
shortens; a request re-asks several times before the user stops, where cancelling at ask
starves the front-end. `gap_share_by_kind` gives the shares for each kind apart.
Thread budget: torch 1, whisper 1, llama.cpp 1 (2 cores).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import platform
import statistics
import tempfile
from pathlib import Path

import numpy as np

from kame_desktop.choices import OPENAI_LLM
from kame_desktop.events import (
    FRAME_SECONDS,
    SAMPLE_RATE,
    AsrFinalEvent,
    EventBus,
    LlmCancelledEvent,
    LlmDoneEvent,
    LlmFirstChunkEvent,
    LlmRequestEvent,
    OracleTokenEvent,
    Stamped,
)

log = logging.getLogger(__name__)

TAIL_SECONDS = 3.0


def word_lags_ms(records: list[Stamped]) -> tuple[list[float], list[float]]:
    """Per user word, the oracle lag in ms; and the LLM times to first token."""
    word_ends = [w.end for r in records if isinstance(r.event, AsrFinalEvent) for w in r.event.words]
    request_words = {r.event.request: r.event.word_count for r in records if isinstance(r.event, LlmRequestEvent)}
    first_token: dict[int, float] = {}
    for r in records:
        if isinstance(r.event, OracleTokenEvent) and r.event.request is not None:
            first_token.setdefault(r.event.request, r.t)
    lags = []
    for index, end in enumerate(word_ends):
        times = [first_token[req] for req, n in request_words.items() if n > index and req in first_token]
        times = [t for t in times if t >= end]
        if times:
            lags.append((min(times) - end) * 1000)
    ttfts = [r.event.ttft_ms for r in records if isinstance(r.event, LlmFirstChunkEvent)]
    return lags, ttfts


def oracle_gap_frames(records: list[Stamped]) -> tuple[int, int]:
    """(frames fed PAD while a request was live, frames with a request live), from the user's
    first word to the last oracle token fed."""
    starts = [w.start for r in records if isinstance(r.event, AsrFinalEvent) for w in r.event.words]
    fed = {r.frame for r in records if isinstance(r.event, OracleTokenEvent)}
    if not starts or not fed:
        return 0, 0
    last = max(r.frame for r in records)
    opened = {r.event.request: r.frame for r in records if isinstance(r.event, LlmRequestEvent)}
    closed = {r.event.request: r.frame for r in records if isinstance(r.event, LlmDoneEvent | LlmCancelledEvent)}
    spans = [(frame, closed.get(request, last)) for request, frame in opened.items()]
    live = [f for f in range(int(min(starts) / FRAME_SECONDS), max(fed) + 1) if any(a <= f < b for a, b in spans)]
    return sum(f not in fed for f in live), len(live)


def spoken_texts(questions: tuple[str, ...], requests: tuple[str, ...]) -> list[str]:
    """A question, a request, a question…; what one kind has beyond the other comes last."""
    paired = [text for pair in zip(questions, requests, strict=False) for text in pair]
    n = min(len(questions), len(requests))
    return paired + list(questions[n:]) + list(requests[n:])


# The arms: (name, policy, max_streams). `cancel` only where answers can overlap.
ARMS = (("reactive", "reactive", 3), ("polling", "polling", 3))
CANCEL_ARM = ("cancel", "reactive", 1)
KINDS = ("questions", "requests")


def _run_one(frontend, asr, pcm: np.ndarray, policy: str, llm_threads: int, llm_url: str | None, max_streams: int) -> list[Stamped]:
    from kame_desktop.assembly import build_session
    from kame_desktop.audio.sources import FileSource, NullSink
    from kame_desktop.backend.llm.local import SMOLLM2
    from kame_desktop.config import LlmSettings, Settings

    records: list[Stamped] = []
    bus = EventBus()
    bus.subscribe(records.append)
    # The in-process yardstick is SmolLM2 whatever the app's default (the bench measures the policy).
    llm = LlmSettings(threads=llm_threads, policy=policy, max_streams=max_streams, gguf_path=SMOLLM2)
    if llm_url:
        llm = dataclasses.replace(llm, provider=OPENAI_LLM, base_url=llm_url, model="scripted")
    session = build_session(Settings(llm=llm), bus, frontend=frontend, asr=asr)
    try:
        session.run(FileSource(pcm, TAIL_SECONDS, realtime=True), NullSink())
    finally:
        session.close()
    return records


def run_bench(questions: int = 12, threads: int = 1, llm_url: str | None = None, scripted_llm: bool = False,
              asr_model: str | None = None) -> dict:
    from kame_desktop.config import using_data_dir

    with contextlib.ExitStack() as stack:
        stack.enter_context(using_data_dir(Path(stack.enter_context(tempfile.TemporaryDirectory()))))  # not the user's timers
        if scripted_llm:
            from kame_desktop.bench.scripted_llm import ScriptedLlmServer
            from kame_desktop.config import environ_set
            from kame_desktop.credentials import API_KEY_ENV

            llm_url = stack.enter_context(ScriptedLlmServer()).url
            stack.enter_context(environ_set(API_KEY_ENV, "scripted"))  # never the user's key, even to 127.0.0.1
        return _bench(questions, threads, llm_url, "scripted" if scripted_llm else llm_url, asr_model)


def _bench(questions: int, threads: int, llm_url: str | None, llm_label: str | None, asr_model: str | None) -> dict:
    import soxr
    import torch

    from kame_desktop.backend.asr.whisper import WhisperAsr
    from kame_desktop.bench.heard import word_latencies_ms
    from kame_desktop.bench.speech import QUESTIONS, REQUESTS, speak
    from kame_desktop.config import AsrSettings
    from kame_desktop.frontend.kame.engine import KameFrontEnd
    from kame_desktop.frontend.kame.tiny import make_tiny_checkpoint

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        frontend = KameFrontEnd.load(str(make_tiny_checkpoint(Path(tmp) / "tiny")), device="cpu")
    asr = WhisperAsr(asr_model or AsrSettings().whisper_model, cpu_threads=threads)
    word_ms: list[float] = []
    arms = ARMS + ((CANCEL_ARM,) if llm_url else ())
    results: dict[str, list[dict]] = {name: [] for name, _, _ in arms}
    gaps: dict[tuple[str, str], list[int]] = {(name, kind): [0, 0] for name, _, _ in arms for kind in KINDS}
    # One untimed turn first: a process's first Whisper passes, torch frames and HTTP requests
    # are slower, and they fell on the first arm (reactive) of the first question: in five runs
    # its oracle gap was 11–16 frames, the other questions' 4–11.
    _run_one(frontend, asr, speak(QUESTIONS[0]), "reactive", threads, llm_url, ARMS[0][2])
    for text in spoken_texts(QUESTIONS, REQUESTS)[:questions]:
        kind = "requests" if text in REQUESTS else "questions"
        pcm = speak(text)
        word_ends = [w.end for w in asr.word_times(soxr.resample(pcm, 24000, asr.RATE))]
        for name, policy, max_streams in arms:  # same utterance, every arm, back to back
            records = _run_one(frontend, asr, pcm, policy, threads, llm_url, max_streams)
            if name == "reactive":
                word_ms += word_latencies_ms(records, word_ends)
            lags, ttfts = word_lags_ms(records)
            gap, live = oracle_gap_frames(records)
            gaps[name, kind][0] += gap
            gaps[name, kind][1] += live
            log.info("%s %r: lags %s, gap %d/%d frames", name, text, [round(x) for x in lags], gap, live)
            results[name].append({
                "question": text,
                "kind": kind,
                "speech_s": round(len(pcm) / SAMPLE_RATE, 2),
                "words": len(lags),
                "median_oracle_lag_ms": round(statistics.median(lags), 1) if lags else None,
                "median_ttft_ms": round(statistics.median(ttfts), 1) if ttfts else None,
                "oracle_gap_frames": gap,
                "live_frames": live,
            })

    def overall(arm: str, key: str) -> float | None:
        values = [u[key] for u in results[arm] if u[key] is not None]
        return round(statistics.median(values), 1) if values else None

    def gap_share(arm: str, kinds: tuple[str, ...] = KINDS) -> float | None:
        gap, live = (sum(gaps[arm, kind][i] for kind in kinds) for i in (0, 1))
        return round(gap / live, 3) if live else None

    def share_ratio(kinds: tuple[str, ...] = KINDS) -> float | None:
        ours, cancel = gap_share("reactive", kinds), gap_share("cancel", kinds)
        return round(ours / cancel, 3) if ours is not None and cancel else None

    ours, baseline = overall("reactive", "median_oracle_lag_ms"), overall("polling", "median_oracle_lag_ms")
    result = {
        "median_oracle_lag_ms": ours,
        "baseline_median_oracle_lag_ms": baseline,
        "ratio": round(ours / baseline, 3) if ours and baseline else None,
        "median_ttft_ms": overall("reactive", "median_ttft_ms"),
        "baseline_median_ttft_ms": overall("polling", "median_ttft_ms"),
        "word_latency_ms": round(statistics.median(word_ms), 1) if word_ms else None,
        "word_latency_p90_ms": round(float(np.percentile(word_ms, 90)), 1) if word_ms else None,
        "oracle_gap_share": gap_share("reactive"),
        "baseline_oracle_gap_share": gap_share("polling"),
    }
    if llm_url:
        cancel_lag, cancel_gap = overall("cancel", "median_oracle_lag_ms"), gap_share("cancel")
        result |= {
            "cancel_median_oracle_lag_ms": cancel_lag,
            "cancel_oracle_gap_share": cancel_gap,
            "gap_share_ratio": share_ratio(),
            "gap_share_by_kind": {kind: {"oracle_gap_share": gap_share("reactive", (kind,)),
                                         "cancel_oracle_gap_share": gap_share("cancel", (kind,)),
                                         "gap_share_ratio": share_ratio((kind,))} for kind in KINDS},
            "lag_vs_cancel": round(ours / cancel_lag, 3) if ours and cancel_lag else None,
        }
    return result | {
        "llm": llm_label or "local (embedded SmolLM2-135M)",
        "asr_model": asr.name,
        "utterances": results,
        "threads": {"torch": threads, "whisper": threads, "llama": threads},
        "frame_ms": FRAME_SECONDS * 1000,
        "machine": {"platform": platform.platform(), "torch": torch.__version__},
    }
