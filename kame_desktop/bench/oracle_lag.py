"""`kame-desktop bench oracle-lag`: how soon the oracle carries what the user just said.

espeak-ng questions are streamed paced (real time) through the tiny KAME front-end with the
embedded back-end (streaming whisper + the in-process SmolLM2), once per policy: `reactive`
(ours) and `polling` (the reference's, the baseline). For every recognised user word,
oracle_lag = the time the word ended in the audio (its ASR timestamp) → the first oracle token
the front-end was fed from a request that included that word. ratio = reactive ÷ polling.
Thread budget: torch 1, whisper 1, llama.cpp 1 (2 cores).
"""

from __future__ import annotations

import logging
import platform
import statistics
import tempfile
from pathlib import Path

import numpy as np

from kame_desktop.events import (
    FRAME_SECONDS,
    AsrFinalEvent,
    EventBus,
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


def _run_one(frontend, asr, pcm: np.ndarray, policy: str, llm_threads: int) -> list[Stamped]:
    from kame_desktop.assembly import build_session
    from kame_desktop.audio.sources import FileSource, NullSink
    from kame_desktop.config import LlmSettings, Settings

    records: list[Stamped] = []
    bus = EventBus()
    bus.subscribe(records.append)
    settings = Settings(llm=LlmSettings(threads=llm_threads, policy=policy))
    session = build_session(settings, bus, frontend=frontend, asr=asr)
    try:
        session.run(FileSource(pcm, TAIL_SECONDS, realtime=True), NullSink())
    finally:
        session.close()
    return records


def run_bench(questions: int = 6, threads: int = 1) -> dict:
    import torch

    from kame_desktop.backend.asr.whisper import WhisperAsr
    from kame_desktop.bench.speech import QUESTIONS, speak
    from kame_desktop.frontend.kame.engine import KameFrontEnd
    from kame_desktop.frontend.kame.tiny import make_tiny_checkpoint

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        frontend = KameFrontEnd.load(str(make_tiny_checkpoint(Path(tmp) / "tiny")), device="cpu")
    asr = WhisperAsr(cpu_threads=threads)
    results: dict[str, list[dict]] = {"reactive": [], "polling": []}
    for text in QUESTIONS[:questions]:
        pcm = speak(text)
        for policy in results:  # same utterance, both policies, back to back
            lags, ttfts = word_lags_ms(_run_one(frontend, asr, pcm, policy, threads))
            log.info("%s %r: lags %s", policy, text, [round(x) for x in lags])
            results[policy].append({
                "question": text,
                "words": len(lags),
                "median_oracle_lag_ms": round(statistics.median(lags), 1) if lags else None,
                "median_ttft_ms": round(statistics.median(ttfts), 1) if ttfts else None,
            })

    def overall(policy: str, key: str) -> float | None:
        values = [u[key] for u in results[policy] if u[key] is not None]
        return round(statistics.median(values), 1) if values else None

    ours, baseline = overall("reactive", "median_oracle_lag_ms"), overall("polling", "median_oracle_lag_ms")
    return {
        "median_oracle_lag_ms": ours,
        "baseline_median_oracle_lag_ms": baseline,
        "ratio": round(ours / baseline, 3) if ours and baseline else None,
        "median_ttft_ms": overall("reactive", "median_ttft_ms"),
        "baseline_median_ttft_ms": overall("polling", "median_ttft_ms"),
        "utterances": results,
        "threads": {"torch": threads, "whisper": threads, "llama": threads},
        "frame_ms": FRAME_SECONDS * 1000,
        "machine": {"platform": platform.platform(), "torch": torch.__version__},
    }
