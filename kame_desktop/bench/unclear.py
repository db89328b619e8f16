"""`kame-desktop bench unclear`: how often the companion says it didn't catch the question.

The `facts` questions, spoken by Piper (the shipped voice, cached like `eval`'s), go through the
app's recognizer (`WhisperAsr` with the app's settings: `auto` = tiny.en while the user talks, the
pause pass, base for the final words) frame by frame, each followed by silence until the VAD ends
the utterance; the turn's final words and their confidence then go through the OracleManager's own
rule (`understood`), the one that makes the companion ask to repeat. Conditions:

- `clean`: as spoken (the rule must stay quiet: ≤ 2 %);
- `noise`: white noise over the last 60 % of the question at `snr_db` (default −10: the noise
  10 dB louder than the speech, whose level is its RMS over the samples above −60 dBFS): the end
  of the question is lost (≥ 70 %);
- `noise_snr-5`, `noise_snr0`: the same with the noise 5 dB louder than the speech, and as loud,
  where Whisper still hears some or many questions right;
- `cut`: the audio cut at 60 % of its length, mid-word, then silence (reported).

Per condition: `fired` (questions asked to repeat), `rate`, `heard_right` (final words equal to
the question, punctuation and case aside), `fired_on_heard_right`, `missed_misheard` (misheard and
answered anyway), and per signal how many it alone would have fired on. Recognition is not paced at
real time (`adaptive_pacing` off: a pass every 0.4 s of audio), so a run does not depend on the
machine's speed."""

from __future__ import annotations

import logging
import platform
import re
import time

import numpy as np

log = logging.getLogger(__name__)

CONDITIONS = ("clean", "noise", "noise_snr-5", "noise_snr0", "cut")
NOISE_FROM = 0.4  # the noise covers the question from 40 % of its length
CUT_AT = 0.6


def _words(text: str) -> list[str]:
    return re.sub(r"[^\w' ]+", " ", text.lower()).split()


def degrade(pcm: np.ndarray, condition: str, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """The question as the condition has it (24 kHz float32)."""
    x = np.array(pcm, np.float32)
    if condition == "cut":
        return x[: int(len(x) * CUT_AT)]
    if condition == "clean":
        return x
    snr = snr_db if condition == "noise" else float(condition.removeprefix("noise_snr"))
    voiced = x[np.abs(x) > 1e-3]
    rms = float(np.sqrt(np.mean(voiced**2))) if len(voiced) else 0.1
    k = int(len(x) * NOISE_FROM)
    x[k:] += (rng.standard_normal(len(x) - k) * rms * 10 ** (-snr / 20)).astype(np.float32)
    return np.clip(x, -1.0, 1.0)


def hear(asr, pcm: np.ndarray) -> list:
    """Feed 0.5 s of silence, the question and 1.5 s of silence in 80 ms frames; the ASR events."""
    from kame_desktop.events import FRAME_SIZE, SAMPLE_RATE

    gap = np.zeros(SAMPLE_RATE // 2, np.float32)
    audio = np.concatenate([gap, pcm, gap, gap, gap])
    asr.reset()
    events, t = [], 0.0
    for i in range(0, len(audio), FRAME_SIZE):
        chunk = audio[i : i + FRAME_SIZE]
        t += len(chunk) / SAMPLE_RATE
        events += asr.feed(chunk, t)
    return events + asr.flush(t)


def judge(events: list):
    """(the turn's words as the OracleManager weighs them, whether it answers them)."""
    from kame_desktop.backend.oracle_manager import Heard, understood
    from kame_desktop.events import AsrFinalEvent

    heard = Heard()
    for event in events:
        if isinstance(event, AsrFinalEvent) and event.text.strip():
            heard = heard.add(event)
    return heard, understood(heard)


def run_bench(limit: int | None = None, snr_db: float = -10.0, conditions: tuple[str, ...] = CONDITIONS,
              details: bool = False) -> dict:
    from kame_desktop.backend.asr.whisper import WhisperAsr
    from kame_desktop.backend.oracle_manager import (
        UNCLEAR_LOGPROB,
        UNCLEAR_NO_SPEECH,
        UNCLEAR_UNHEARD_S,
        UNCLEAR_WORD_LOGPROB,
    )
    from kame_desktop.config import AsrSettings
    from kame_desktop.evaluation.questions import load_set
    from kame_desktop.evaluation.speech import Speaker

    started = time.monotonic()
    questions = [q.turns[0] for q in load_set("facts", limit)]
    speaker = Speaker("piper")
    settings = AsrSettings()
    asr = WhisperAsr(settings.whisper_model, cpu_threads=settings.threads, language=settings.language or None)
    asr.adaptive_pacing = False
    results: dict[str, dict] = {}
    for condition in conditions:
        rng = np.random.default_rng(0)
        t = time.monotonic()
        rows = []
        for question in questions:
            heard, answered = judge(hear(asr, degrade(speaker.speak(question), condition, snr_db, rng)))
            rows.append({"question": question, "heard": heard.text, "answered": answered,
                         "right": _words(heard.text) == _words(question), "avg_logprob": heard.avg_logprob,
                         "word_logprob": heard.word_logprob, "no_speech_prob": round(heard.no_speech, 3),
                         "unheard_s": heard.unheard})
        n, fired = len(rows), sum(not r["answered"] for r in rows)
        results[condition] = {
            "questions": n,
            "fired": fired,
            "rate": round(fired / n, 3) if n else None,
            "heard_right": sum(r["right"] for r in rows),
            "fired_on_heard_right": sum(r["right"] and not r["answered"] for r in rows),
            "missed_misheard": sum(not r["right"] and r["answered"] for r in rows),
            "by_signal": {
                "avg_logprob": sum(r["avg_logprob"] is not None and r["avg_logprob"] < UNCLEAR_LOGPROB for r in rows),
                "word_logprob": sum(r["word_logprob"] is not None and r["word_logprob"] < UNCLEAR_WORD_LOGPROB
                                    for r in rows),
                "no_speech_prob": sum(r["no_speech_prob"] >= UNCLEAR_NO_SPEECH for r in rows),
                "unheard_s": sum(r["unheard_s"] is not None and r["unheard_s"] > UNCLEAR_UNHEARD_S for r in rows),
            },
            "max_unheard_s": max((r["unheard_s"] for r in rows if r["unheard_s"] is not None), default=None),
            "min_word_logprob": min((r["word_logprob"] for r in rows if r["word_logprob"] is not None), default=None),
            "seconds": round(time.monotonic() - t, 1),
            **({"rows": rows} if details else {}),
        }
        log.info("%s: %s of %s asked to repeat (%.0f s)", condition, fired, n, time.monotonic() - t)
    return {
        "noise_rate": results.get("noise", {}).get("rate"),
        "clean_rate": results.get("clean", {}).get("rate"),
        "cut_rate": results.get("cut", {}).get("rate"),
        "conditions": results,
        "snr_db": snr_db,
        "asr": asr.name,
        "thresholds": {"avg_logprob": UNCLEAR_LOGPROB, "word_logprob": UNCLEAR_WORD_LOGPROB,
                       "no_speech_prob": UNCLEAR_NO_SPEECH, "unheard_s": UNCLEAR_UNHEARD_S},
        "voice": "piper",
        "machine": platform.processor() or platform.machine(),
        "seconds": round(time.monotonic() - started, 1),
    }
