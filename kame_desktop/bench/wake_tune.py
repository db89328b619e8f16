"""Held-out audio for choosing a wake word's thresholds: speech `bench wake` never plays.

`python -m kame_desktop.bench.wake_tune [WORD] [--table]` makes it (once, ~5 min; kept in
`--cache`), scores it (~10 min) and prints the choice as JSON; the chosen thresholds go into
`audio/wake_word.py` by hand, and `bench wake` then measures them on its own audio.

Negatives: the MT-Bench *reference answers* (the evaluator package's prose, not its questions,
which `bench wake` plays) and the project's `tools` and `memory` questions, spoken back to back
by Piper and espeak-ng in other voices and speeds than the benchmark's, 30 minutes, the second
half under pink noise 15 dB down (a fan in the room). Positives: the wake phrase and other
questions than the benchmark's, Piper at six speeds (0.7–1.35, faster speech included) and
espeak-ng in four voices at three speeds, with 0.05–0.3 s between the word and the question, each
clean, at −26 dB, under pink noise 5, 8, 12 and 15 dB down, white 12, brown 10 and babble 10.

The choice, for each head threshold on a grid of logits (0–10 by 0.5): a word with a second stage
(`CONFIRM`) confirms every candidate step over it; its confirmation threshold is `--margin` (2)×
the highest probability any negative candidate got (so none of the held-out negatives wakes it),
and the head threshold chosen is the lowest whose confirmations cost at most `--max-confirm-cpu`
(1 %) of a core in continuous speech. A word without one: the lowest head threshold with at most
one false wake in the 30 minutes. Every row says what the positives would get.
"""

from __future__ import annotations

import argparse
import json
import logging
import pickle
import re
import time
from pathlib import Path

import numpy as np

from kame_desktop.bench.wake import HIT_WINDOW_S, RATE, _espeak, _false_wakes, _pink, _Piper, _trim

log = logging.getLogger(__name__)

QUESTIONS = ("could you turn on the lights?", "how far away is the moon?", "tell me a joke about cats.",
             "what is 15 percent of 260?", "remind me to call my sister.", "who wrote Pride and Prejudice?")
PIPER_LENGTHS = (0.7, 0.75, 0.85, 0.95, 1.1, 1.35)
PIPER_NOISE = (0.5, 0.9)
ESPEAK_VOICES = ("en-us+m3", "en-gb-x-rp", "en-us+f2", "en")
ESPEAK_SPEEDS = (150, 190, 230)
CONDITIONS = ("clean", "low26", "pink5", "pink8", "pink12", "pink15", "white12", "brown10", "babble10")
NEGATIVE_MINUTES = 30.0
WAKE_RE = re.compile(r"alexa|alexis|mycroft|wake up", re.I)


def negative_texts() -> list[str]:
    from kame_desktop.evaluation.questions import _mtbench_dir, load_set

    texts = []
    for name in ("gpt-4-0125-preview.jsonl", "gpt-4.jsonl"):
        for line in (_mtbench_dir() / "mt_bench" / "reference_answer" / name).read_text("utf-8").splitlines():
            for turn in json.loads(line)["choices"][0]["turns"]:
                texts += _prose(turn)
    texts += [q.turns[0] for name in ("tools", "memory") for q in load_set(name)]
    return [t for t in texts if not WAKE_RE.search(t)]


def _prose(text: str) -> list[str]:
    """The sentences of `text` that read as speech (no code, formulas or lists of symbols)."""
    text = re.sub(r"```.*?```", " ", text, flags=re.S)
    text = re.sub(r"[`*#|>\[\]()_\\$=^{}]", " ", text)
    out = []
    for s in re.split(r"(?<=[.!?:])\s+|\n+", text):
        s = " ".join(s.split()).lstrip("-–—:;,. 0123456789")
        if 25 <= len(s) <= 300 and sum(c.isalpha() or c == " " for c in s) > 0.9 * len(s):
            out.append(s)
    return out


def _add(clip: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    speech_rms = np.sqrt(np.mean(clip[np.abs(clip) > 1e-3] ** 2))
    return np.clip(clip + noise * speech_rms * 10 ** (-snr_db / 20), -1, 1).astype(np.float32)


def _brown(n: int, rng: np.random.Generator) -> np.ndarray:
    x = np.cumsum(rng.standard_normal(n))
    x -= np.convolve(x, np.ones(1600) / 1600, "same")  # no drift below ~10 Hz
    return (x / np.std(x)).astype(np.float32)


class Voices:
    def __init__(self, rng: np.random.Generator) -> None:
        self.piper, self.rng = _Piper(), rng

    def say(self, i: int, text: str) -> np.ndarray:
        """Alternately Piper and espeak-ng, at a speed and in a voice drawn for each sentence."""
        r = self.rng
        if i % 2:
            return self.piper(text, float(r.choice([0.85, 1.0, 1.15])), float(r.choice([0.5, 0.8])))
        return _espeak(text, str(r.choice(ESPEAK_VOICES)), int(r.choice([150, 170, 190])))


def make_negatives(voices: Voices, texts: list[str], minutes: float = NEGATIVE_MINUTES) -> np.ndarray:
    parts, total = [], 0
    pause = np.zeros(round(0.3 * RATE), np.float32)
    for i, text in enumerate(texts):
        parts += [voices.say(i, text), pause]
        total += len(parts[-2]) + len(pause)
        if total >= minutes * 60 * RATE:
            break
    x = np.concatenate(parts)
    half = len(x) // 2
    x[half:] = _add(x[half:], _pink(len(x) - half, voices.rng), 15)
    return x


def make_positives(phrase: str, voices: Voices, babble: np.ndarray) -> list[dict]:
    """[{who, condition, length (Piper's, 0 for espeak-ng), clip, start, end (of the phrase, s)}]."""
    r, piper = voices.rng, voices.piper
    spoken = []
    k = 0
    for length in PIPER_LENGTHS:
        for noise in PIPER_NOISE:
            for _ in range(2):
                q = QUESTIONS[k % len(QUESTIONS)]
                k += 1
                spoken.append(("piper", length, _trim(piper(phrase + ",", length, noise)),
                               piper(q[0].upper() + q[1:], length, noise)))
    for voice in ESPEAK_VOICES:
        for speed in ESPEAK_SPEEDS:
            q = QUESTIONS[k % len(QUESTIONS)]
            k += 1
            spoken.append(("espeak", 0.0, _trim(_espeak(phrase.lower(), voice, speed)), _espeak(q, voice, speed)))
    out = []
    for who, length, wake, question in spoken:
        lead, gap = float(r.uniform(0.3, 1.2)), float(r.uniform(0.05, 0.3))
        clip = np.concatenate([np.zeros(round(lead * RATE), np.float32), wake,
                               np.zeros(round(gap * RATE), np.float32), question])
        n = len(clip)
        start = int(r.integers(0, len(babble) - n))
        bab = babble[start : start + n] / (np.sqrt(np.mean(babble[start : start + n] ** 2)) + 1e-9)
        noisy = {"clean": clip, "low26": (clip * 0.05).astype(np.float32),
                 "pink5": _add(clip, _pink(n, r), 5), "pink8": _add(clip, _pink(n, r), 8),
                 "pink12": _add(clip, _pink(n, r), 12), "pink15": _add(clip, _pink(n, r), 15),
                 "white12": _add(clip, r.standard_normal(n).astype(np.float32), 12),
                 "brown10": _add(clip, _brown(n, r), 10), "babble10": _add(clip, bab.astype(np.float32), 10)}
        for condition in CONDITIONS:
            out.append({"who": who, "condition": condition, "length": length, "clip": noisy[condition],
                        "start": lead, "end": lead + len(wake) / RATE})
    return out


def heldout(word: str, cache: Path) -> dict:
    """{"negatives": 16 kHz speech, "positives": make_positives(...)}, made once into `cache`."""
    from kame_desktop.audio.wake_word import PHRASES

    cache.mkdir(parents=True, exist_ok=True)
    negatives_path, positives_path = cache / "negatives.npy", cache / f"positives_{word}.pkl"
    texts = negative_texts()
    np.random.default_rng(7).shuffle(texts)
    babble_texts, texts = texts[:40], texts[40:]  # the babble's sentences are not negatives'
    if not negatives_path.exists():
        log.info("making %.0f min of held-out negatives", NEGATIVE_MINUTES)
        np.save(negatives_path, make_negatives(Voices(np.random.default_rng(11)), texts))
    if not positives_path.exists():
        voices = Voices(np.random.default_rng(13))
        babble = np.concatenate([voices.say(i, t) for i, t in enumerate(babble_texts)])
        with open(positives_path, "wb") as f:
            pickle.dump(make_positives(PHRASES[word], voices, babble), f)
    with open(positives_path, "rb") as f:
        positives = pickle.load(f)
    return {"negatives": np.load(negatives_path), "positives": positives}


def scored(word: str, data: dict, cache: Path, lowest_logit: float) -> dict:
    """The head's probabilities on every held-out clip, and for a word with a second stage its
    probability (and CPU time) at every candidate step whose head logit is ≥ `lowest_logit`
    (positives: in the window a wake counts in, as `bench wake` counts it). Kept in `cache`."""
    from kame_desktop.audio.wake_word import CONFIRM, CONFIRM_WINDOW, STEP, WakeConfirmer, WakeWordDetector

    path = cache / f"scores_{word}_{lowest_logit:g}.pkl"
    if path.exists():
        with open(path, "rb") as f:
            return pickle.load(f)
    detector = WakeWordDetector(word)
    out: dict = {"negatives": detector.probabilities(data["negatives"]), "positives": []}
    for p in data["positives"]:
        out["positives"].append(detector.probabilities(p["clip"]))
    log.info("head scores done")
    if word in CONFIRM:
        confirm = WakeConfirmer(CONFIRM[word][0])
        floor = 1 / (1 + np.exp(-lowest_logit))

        def second(x: np.ndarray, steps: np.ndarray) -> dict[int, tuple[float, float]]:
            heard = np.concatenate([np.zeros(CONFIRM_WINDOW, np.float32), x])
            res = {}
            for i in steps:
                end = (int(i) + 1) * STEP
                t = time.process_time()
                res[int(i)] = (confirm(heard[end : end + CONFIRM_WINDOW]), time.process_time() - t)
            return res

        out["confirm_negatives"] = second(data["negatives"], np.flatnonzero(out["negatives"] >= floor))
        out["confirm_positives"] = []
        for p, probs in zip(data["positives"], out["positives"], strict=True):
            ends = (np.arange(len(probs)) + 1) * STEP / RATE
            steps = np.flatnonzero((probs >= floor) & (ends >= p["start"]) & (ends <= p["end"] + HIT_WINDOW_S))
            out["confirm_positives"].append(second(p["clip"], steps))
        out["confirm_seconds"] = confirm.seconds
    with open(path, "wb") as f:
        pickle.dump(out, f)
    return out


def _logit(p: np.ndarray | float) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), 1e-9, 1 - 1e-9)
    return np.log(p / (1 - p))


def choose(word: str, data: dict, s: dict, max_confirm_cpu: float, margin: float) -> dict:
    """A table over candidate thresholds (head logits), and the choice (see the module doc)."""
    from kame_desktop.audio.wake_word import CONFIRM, STEP

    minutes = len(data["negatives"]) / RATE / 60
    neg = _logit(s["negatives"])
    rows = []
    for logit in np.arange(0.0, 10.01, 0.5):
        row: dict = {"head_logit": float(logit), "head_threshold": round(float(1 / (1 + np.exp(-logit))), 5)}
        if word in CONFIRM:
            cands = {i: v for i, v in s["confirm_negatives"].items() if neg[i] >= logit}
            cpu_s = float(np.median([c for _, c in s["confirm_negatives"].values()])) if cands else 0.0
            row["candidates_per_min"] = round(len(cands) / minutes, 1)
            row["confirm_cpu_percent"] = round(100 * len(cands) / minutes * cpu_s / 60, 2)
            top = max((p for p, _ in cands.values()), default=0.0)
            row["highest_negative"] = round(top, 5)
            confirm = top * margin
            row["confirm_threshold"] = round(confirm, 5)
            hits = []
            for probs, conf in zip(s["positives"], s["confirm_positives"], strict=True):
                hits.append(any(_logit(probs[i]) >= logit and c >= confirm for i, (c, _) in conf.items()))
        else:
            threshold = 1 / (1 + np.exp(-logit))
            row["false_wakes_per_30min"] = round(_false_wakes(s["negatives"], threshold) * 30 / minutes, 2)
            hits = []
            for p, probs in zip(data["positives"], s["positives"], strict=True):
                ends = (np.arange(len(probs)) + 1) * STEP / RATE
                hits.append(bool(np.any((probs >= threshold) & (ends >= p["start"]) & (ends <= p["end"] + HIT_WINDOW_S))))
        row.update(_rates(data["positives"], hits))
        rows.append(row)
    if word in CONFIRM:
        fit = [r for r in rows if r["confirm_cpu_percent"] <= max_confirm_cpu]
        rule = f"the lowest head threshold whose confirmations cost ≤ {max_confirm_cpu} % of a core; the confirmation {margin}× the highest negative's"
    else:
        fit = [r for r in rows if r["false_wakes_per_30min"] <= 1.0]
        rule = "the lowest head threshold with ≤ 1 false wake per 30 min"
    return {"word": word, "negative_minutes": round(minutes, 2), "rule": rule, "chosen": fit[0] if fit else None, "table": rows}


def _rates(positives: list[dict], hits: list[bool]) -> dict:
    def rate(keep) -> float:
        v = [h for p, h in zip(positives, hits, strict=True) if keep(p)]
        return round(float(np.mean(v)), 3) if v else float("nan")

    return {
        "piper": rate(lambda p: p["who"] == "piper"),
        "espeak": rate(lambda p: p["who"] == "espeak"),
        "piper_by_condition": {c: rate(lambda p, c=c: p["who"] == "piper" and p["condition"] == c) for c in CONDITIONS},
        "piper_noisy_by_length": {str(n): rate(lambda p, n=n: p["who"] == "piper" and p["length"] == n and p["condition"] not in ("clean", "low26"))
                                  for n in PIPER_LENGTHS},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("word", nargs="?", default="alexa")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "kame-desktop" / "wake-tune")
    parser.add_argument("--max-confirm-cpu", type=float, default=1.0, help="%% of a core the second stage may cost in continuous speech")
    parser.add_argument("--margin", type=float, default=2.0, help="the confirmation threshold over the highest held-out negative")
    parser.add_argument("--table", action="store_true", help="print every candidate threshold's row")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    data = heldout(args.word, args.cache)
    result = choose(args.word, data, scored(args.word, data, args.cache, 0.0), args.max_confirm_cpu, args.margin)
    if not args.table:
        result.pop("table")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
