"""`kame-desktop bench wake`: how well each wake word is heard, how often it is heard when it was
not said, and what waiting for it costs.

Positives: the wake phrase, a 0.15 s pause, then a question, spoken by Piper at three speeds ×
three noise scales and by espeak-ng in four voices × three speeds; each clip also at −20 dB (low
volume) and with pink noise from 50 Hz at 10 dB SNR. A positive counts when the detector fires
between the phrase's start and 1 s after its end. Negatives: the `facts` and MT-Bench questions (both turns)
spoken back to back, alternately by Piper and espeak-ng, until at least 30 minutes of speech
(one false wake is then 1 per 30 min, not 2); every detection in them is a false wake (after one,
the detector starts afresh, as in the app). All speech is made once per run and kept in memory.
Each clip goes through the detector as the app's microphone does: noise suppression (RNNoise)
included, from a fresh start at the clip's first sample.

detection_rate: Piper positives (all three conditions); espeak_detection_rate: espeak-ng's;
false_wakes_per_30min: over the negatives; waiting_cpu_percent: the detector's CPU time (process
time: resampling and a second stage's Whisper threads included) over the first `cpu_seconds` of
the negatives fed frame by frame as the app does, as a % of one core (speech all along: the worst
case; silence is not scored); wake_to_listening_median_ms: the end of the wake phrase's speech →
the end of the 80 ms step whose score fired (Piper, clean), plus the median time one score takes
and, for a word with a second stage, the median time it takes (the wake is reported after it).
A word with a second stage (`audio/wake_word.py` CONFIRM) is scored as the app runs it: each
step whose head score passes the candidate threshold is heard by Whisper; `candidates_per_min`
counts them over the negatives.
"""

from __future__ import annotations

import io
import logging
import statistics
import subprocess
import time

import numpy as np

log = logging.getLogger(__name__)

RATE = 16_000
QUESTIONS = ("what time is it?", "what is the weather like tomorrow?")
PIPER_SPEEDS = (0.8, 1.0, 1.25)  # length scale: 1.25 is slower
PIPER_NOISE = (0.333, 0.667, 1.0)
ESPEAK_VOICES = ("en-us", "en-gb", "en-us+f3", "en-029")
ESPEAK_SPEEDS = (140, 175, 210)
NEGATIVE_MINUTES = 30.0
GAP_S, LEAD_S, HIT_WINDOW_S = 0.15, 0.5, 1.0


def _espeak(text: str, voice: str = "en-us", speed: int = 175) -> np.ndarray:
    import soundfile as sf
    import soxr

    wav = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "--stdout", text], check=True, capture_output=True).stdout
    audio, sr = sf.read(io.BytesIO(wav), dtype="float32")
    return soxr.resample(audio, sr, RATE).astype(np.float32)


class _Piper:
    def __init__(self) -> None:
        from kame_desktop.frontend.lite.tts import PiperTts

        self.tts = PiperTts(threads=1)

    def __call__(self, text: str, length: float = 1.0, noise: float = 0.667) -> np.ndarray:
        import soxr
        from piper import SynthesisConfig

        config = SynthesisConfig(length_scale=length, noise_scale=noise, noise_w_scale=0.8)
        return soxr.resample(self.tts.synthesize(text, config), 24_000, RATE).astype(np.float32)


def _speech_end(pcm: np.ndarray) -> float:
    win = RATE // 50
    n = len(pcm) // win
    rms = np.sqrt(np.mean(pcm[: n * win].reshape(n, win) ** 2, axis=1))
    loud = np.flatnonzero(rms > rms.max() * 10 ** (-35 / 20))
    return (loud[-1] + 1) * win / RATE


def _trim(pcm: np.ndarray) -> np.ndarray:
    return pcm[: round(_speech_end(pcm) * RATE)]


def _pink(n: int, rng: np.random.Generator) -> np.ndarray:
    """Pink noise from 50 Hz up (a room's hum and fans; no DC or sub-audio rumble), RMS 1."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / RATE)
    spectrum *= np.where(freqs >= 50, 1 / np.sqrt(np.maximum(freqs, 1)), 0)
    noise = np.fft.irfft(spectrum, n)
    return (noise / np.sqrt(np.mean(noise**2))).astype(np.float32)


def _conditions(clip: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """The clip clean, at −20 dB, and with pink noise 10 dB below its speech."""
    speech_rms = np.sqrt(np.mean(clip[np.abs(clip) > 1e-3] ** 2))
    noisy = clip + _pink(len(clip), rng) * speech_rms * 10 ** (-10 / 20)
    return [clip, clip * 0.1, np.clip(noisy, -1, 1).astype(np.float32)]


CONDITIONS = ("clean", "low", "noise")


def _positives(phrase: str, piper: _Piper, rng: np.random.Generator) -> dict[str, list[tuple[np.ndarray, float, str]]]:
    """voice → [(clip, end of the wake phrase in s, condition)]."""
    lead, gap = np.zeros(round(LEAD_S * RATE), np.float32), np.zeros(round(GAP_S * RATE), np.float32)
    out: dict[str, list[tuple[np.ndarray, float, str]]] = {"piper": [], "espeak": []}
    spoken: list[tuple[str, np.ndarray, np.ndarray]] = []
    for length in PIPER_SPEEDS:
        for noise in PIPER_NOISE:
            for q in QUESTIONS:
                spoken.append(("piper", _trim(piper(phrase + ",", length, noise)), piper(q[0].upper() + q[1:], length, noise)))
    for voice in ESPEAK_VOICES:
        for speed in ESPEAK_SPEEDS:
            spoken.append(("espeak", _trim(_espeak(phrase.lower(), voice, speed)), _espeak(QUESTIONS[0], voice, speed)))
    for who, wake, question in spoken:
        clip = np.concatenate([lead, wake, gap, question])
        for i, c in enumerate(_conditions(clip, rng)):
            out[who].append((c, LEAD_S + len(wake) / RATE, CONDITIONS[i]))
    return out


def _negative_texts() -> list[str]:
    from kame_desktop.evaluation.questions import load_set

    return [turn for name in ("facts", "mtbench") for q in load_set(name) for turn in q.turns]


def _negatives(piper: _Piper) -> np.ndarray:
    parts, total = [], 0.0
    pause = np.zeros(round(0.3 * RATE), np.float32)
    texts = _negative_texts()
    for i in range(10 * len(texts)):
        text = texts[i % len(texts)]
        pcm = piper(text) if i % 2 else _espeak(text, ESPEAK_VOICES[i // 2 % len(ESPEAK_VOICES)])
        parts += [pcm, pause]
        total += (len(pcm) + len(pause)) / RATE
        if total >= NEGATIVE_MINUTES * 60:
            break
    return np.concatenate(parts)


def _first_fire(probs: np.ndarray, threshold: float, start_s: float, end_s: float) -> float | None:
    """The end time (s) of the first 80 ms step in [start_s, end_s] whose score fires."""
    from kame_desktop.audio.wake_word import STEP

    ends = (np.arange(len(probs)) + 1) * STEP / RATE
    hits = np.flatnonzero((probs >= threshold) & (ends >= start_s) & (ends <= end_s))
    return float(ends[hits[0]]) if len(hits) else None


def _fired(steps: list[int], n: int) -> np.ndarray:
    """1.0 at the steps where the detector fired (`WakeWordDetector.fires`), over `n` steps."""
    out = np.zeros(n, np.float32)
    out[steps] = 1.0
    return out


def _false_wakes(probs: np.ndarray, threshold: float) -> int:
    from kame_desktop.audio.wake_word import STEP, WINDOW

    refractory = WINDOW // STEP  # after a wake the detector's window starts empty: 1.5 s
    count, i = 0, 0
    while i < len(probs):
        if probs[i] >= threshold:
            count += 1
            i += refractory
        else:
            i += 1
    return count


def _waiting_cpu(word: str, pcm16k: np.ndarray, seconds: float) -> tuple[float, float]:
    """(% of one core, median ms a score takes): the detector fed 80 ms frames at 24 kHz, as the
    listening gate feeds it (soxr's streaming resampler included)."""
    import soxr

    from kame_desktop.audio.wake_word import WakeWordDetector

    detector = WakeWordDetector(word)
    pcm24 = soxr.resample(pcm16k[: round(seconds * RATE)], RATE, 24_000).astype(np.float32)
    stream = soxr.ResampleStream(24_000, RATE, 1, dtype="float32")
    frames = len(pcm24) // 1920
    scored: list[float] = []
    # process time: CTranslate2 runs the second stage on a thread of its own
    t0 = time.process_time()
    for k in range(frames):
        t = time.process_time()
        before, candidates = detector.scores, detector.candidates
        detector.push(stream.resample_chunk(pcm24[k * 1920 : (k + 1) * 1920]))
        if detector.scores > before and detector.candidates == candidates:
            scored.append(time.process_time() - t)
    cpu = time.process_time() - t0
    return 100 * cpu / (frames * 0.08), 1000 * statistics.median(scored) if scored else 0.0


def bench_word(word: str, positives: dict, negatives: np.ndarray, cpu_seconds: float, suppressed=None) -> dict:
    """`suppressed`: `suppress_noise(negatives)`, made once for every word."""
    from kame_desktop.audio.wake_word import STEP, WakeWordDetector

    detector = WakeWordDetector(word)
    rates: dict[str, float] = {}
    by_condition: dict[str, list[bool]] = {c: [] for c in CONDITIONS}
    lags: list[float] = []
    for who, clips in positives.items():
        hits = 0
        for clip, wake_end, condition in clips:
            until = int((wake_end + HIT_WINDOW_S) * RATE) // STEP  # the steps that can count
            fired = _first_fire(_fired(detector.fires(clip, until=until), until), 0.5, LEAD_S, wake_end + HIT_WINDOW_S)
            hits += fired is not None
            if who == "piper":
                by_condition[condition].append(fired is not None)
                if fired is not None and condition == "clean":
                    lags.append(fired - wake_end)
        rates[who] = hits / len(clips)
    candidates = detector.candidates
    false = len(detector.fires(negatives, suppressed=suppressed))
    minutes = len(negatives) / RATE / 60
    confirm_ms = 1000 * statistics.median(detector.confirm.seconds) if detector.confirm and detector.confirm.seconds else 0.0
    cpu, score_ms = _waiting_cpu(word, negatives, cpu_seconds)
    lag = 1000 * statistics.median(lags) + score_ms + confirm_ms if lags else None
    return {
        "detection_rate": round(rates["piper"], 3),
        "espeak_detection_rate": round(rates["espeak"], 3),
        "piper_detection_by_condition": {c: round(sum(v) / len(v), 3) for c, v in by_condition.items()},
        "false_wakes": false,
        "false_wakes_per_30min": round(false * 30 / minutes, 2),
        "waiting_cpu_percent": round(cpu, 2),
        "wake_to_listening_median_ms": round(lag, 1) if lag is not None else None,
        "score_ms": round(score_ms, 2),
        "threshold": round(detector.threshold, 4),
        "confirm_threshold": detector.confirm_threshold if detector.confirm else None,
        "confirm_ms": round(confirm_ms, 1) if detector.confirm else None,
        "candidates_per_min": round((detector.candidates - candidates) / minutes, 1) if detector.confirm else None,
        "piper_positives": len(positives["piper"]),
        "espeak_positives": len(positives["espeak"]),
    }


def run_bench(words: tuple[str, ...] | None = None, cpu_seconds: float = 60.0) -> dict:
    """Every head the package ships (the offered words and hey_mycroft_synthetic), or `words`."""
    import platform

    from kame_desktop.audio.wake_word import PHRASES, THRESHOLDS, suppress_noise
    from kame_desktop.config import AudioSettings

    t0 = time.monotonic()
    piper = _Piper()
    negatives = _negatives(piper)
    suppressed = suppress_noise(negatives)
    log.info("negatives: %.1f min of speech made in %.0f s", len(negatives) / RATE / 60, time.monotonic() - t0)
    results: dict[str, dict] = {}
    words = words or tuple(THRESHOLDS)
    rng = np.random.default_rng(0)
    for word in words:
        t = time.monotonic()
        results[word] = bench_word(word, _positives(PHRASES[word], piper, rng), negatives, cpu_seconds, suppressed)
        log.info("%s: %s (%.0f s)", word, results[word], time.monotonic() - t)
    default = AudioSettings().wake_word
    return {
        "wake_word": default,
        **results.get(default, {}),
        "negative_minutes": round(len(negatives) / RATE / 60, 2),
        "wake_words": results,
        "machine": platform.processor() or platform.machine(),
        "seconds": round(time.monotonic() - t0, 1),
    }
