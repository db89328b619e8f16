"""Scoring that needs no judge: fact hits, speaker labels, repeated replies, intervals."""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Sequence

from kame_desktop.events import AsrFinalEvent, Stamped

_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")  # 1,000 → 1000
_TOKEN = re.compile(r"\d+(?:\.\d+)+|[a-z0-9\u00c0-\u024f]+")  # 2.5 stays one token
_SPEAKER_LABEL = re.compile(r"\b(user|kame|assistant)\s*:", re.IGNORECASE)
REPEAT_JACCARD = 0.8


def normalize(text: str) -> str:
    """Lower case, punctuation and hyphens to spaces, digit groups joined: the form both the
    reply and the accepted answers are compared in. Compatibility forms first (NFKC): "H₂O" is
    "H2O", "ﬁve" is "five"."""
    return " ".join(_TOKEN.findall(_THOUSANDS.sub("", unicodedata.normalize("NFKC", text).lower())))


def fact_hit(said: str, answers: Iterable[str]) -> bool:
    """True when one accepted answer appears in `said` as whole words ("8" matches "8 legs",
    not "18"; "eight" does not match "eighteen")."""
    haystack = f" {normalize(said)} "
    return any(f" {normalize(a)} " in haystack for a in answers if normalize(a))


def clock_answers(answers: Iterable[str], at: float) -> list[str]:
    """The answers with {time}, {weekday} and {date} filled in from the clock at `at` (epoch
    seconds, local time): a time counts within one minute, in 24- or 12-hour form."""
    from datetime import datetime, timedelta

    t = datetime.fromtimestamp(at)
    out: list[str] = []
    for answer in answers:
        if answer == "{time}":
            for minute in (t + timedelta(minutes=d) for d in (-1, 0, 1)):
                out += [f"{minute:%H:%M}", f"{minute.hour % 12 or 12}:{minute:%M}"]
        elif answer == "{weekday}":
            out.append(f"{t:%A}")
        elif answer == "{date}":
            out += [f"{t:%B} {t.day}", f"{t.day} {t:%B}", f"{t:%B} {t.day}th", f"{t.day}th {t:%B}"]
        else:
            out.append(answer)
    return out


def tool_set(records: Iterable[dict], answer: str) -> bool | None:
    """For {timer:MINUTES} / {reminder:MINUTES}: did the turn set one that long (within 2 %),
    by its tool_call and an ok tool_result? None for any other answer."""
    import json

    match = re.fullmatch(r"\{(timer|reminder):(\d+(?:\.\d+)?)\}", answer)
    if match is None:
        return None
    name, key = ("set_timer", "minutes") if match.group(1) == "timer" else ("set_reminder", "minutes")
    want = float(match.group(2))
    records = list(records)
    done = {r.get("request") for r in records if r.get("kind") == "tool_result" and r.get("name") == name and r.get("ok")}
    for r in records:
        if r.get("kind") == "tool_call" and r.get("name") == name and r.get("request") in done:
            try:
                value = float(json.loads(r.get("arguments") or "{}").get(key))
            except (TypeError, ValueError):
                continue
            if abs(value - want) <= 0.02 * want:
                return True
    return False


def speaker_label(said: str) -> bool:
    """The reply contains a transcript-style label ("User:", "kame :"): the model is writing
    the dialogue rather than speaking its part."""
    return bool(_SPEAKER_LABEL.search(said))


def word_set(text: str) -> frozenset[str]:
    return frozenset(normalize(text).split())


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a or not b:
        return 0.0  # an empty reply repeats nothing
    return len(a & b) / len(a | b)


def repeated(said: str, earlier: Iterable[str]) -> bool:
    """Word-set Jaccard ≥ 0.8 with any earlier reply of the same conversation."""
    words = word_set(said)
    return any(jaccard(words, word_set(e)) >= REPEAT_JACCARD for e in earlier)


def _wer(references: Sequence[str], hypotheses: Sequence[str]) -> float | None:
    """Corpus word error rate (errors ÷ reference words) after `normalize`; None without words."""
    import jiwer

    kept = [(normalize(r), normalize(h)) for r, h in zip(references, hypotheses, strict=True)]
    kept = [(r, h) for r, h in kept if r]
    if not kept:
        return None
    return round(float(jiwer.wer([r for r, _ in kept], [h for _, h in kept])), 3)


def audio_wer(said: str, transcript: str) -> float | None:
    """Word error rate of the reply's transcript against the text it spoke: does the audio say
    what the text says (TTS, truncation by barge-in)? None for a silent reply."""
    return _wer([said], [transcript])


def heard_text(records: Iterable[Stamped]) -> str:
    """The user's final words in a session's timeline (what the answers were asked with), in order."""
    return " ".join(r.event.text.strip() for r in records if isinstance(r.event, AsrFinalEvent) and r.event.text.strip())


def heard_wer(pairs: Sequence[tuple[str, str]]) -> float | None:
    """Word error rate of what the back-end heard against what was said, over all (said, heard) pairs."""
    return _wer([s for s, _ in pairs], [h for _, h in pairs])


def wilson_interval(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion (sound for small n and for 0 or n hits)."""
    if n == 0:
        return (0.0, 1.0)
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))
