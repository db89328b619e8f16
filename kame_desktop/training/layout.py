"""The canonical dialogue layout (spec §4.1) and its validation.

    <root>/audio/<id>.wav        stereo: left = speaker A, right = speaker B (any sample rate)
    <root>/text/<id>.json        [{"speaker": "A"|"B", "word": str, "start": s, "end": s}, ...]
    <root>/oracle_raw/<id>.json  simulated oracle events (written by simulate-oracle)

Every check raises TrainingDataError with one line that names the file and the problem, so a
step can report it and go on with the other dialogues.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kame_desktop.errors import TrainingDataError
from kame_desktop.fileio import atomic_write_bytes

SPEAKERS = ("A", "B")
CHANNEL = {"A": 0, "B": 1}
AUDIO_DIR, TEXT_DIR, ORACLE_DIR = "audio", "text", "oracle_raw"
_EDGE_TOLERANCE_S = 0.05  # word times may overrun the audio by rounding


@dataclass(frozen=True)
class Word:
    speaker: str  # "A" or "B"
    word: str
    start: float  # seconds
    end: float

    def to_json(self) -> dict[str, Any]:
        return {"speaker": self.speaker, "word": self.word, "start": self.start, "end": self.end}


@dataclass(frozen=True)
class AudioInfo:
    channels: int
    sample_rate: int
    frames: int  # samples per channel

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate


def dialogue_ids(root: Path) -> list[str]:
    """Ids of the dialogues that have a transcript, sorted."""
    return sorted(p.stem for p in (root / TEXT_DIR).glob("*.json") if not p.name.startswith("."))


def audio_path(root: Path, dialogue: str) -> Path:
    return root / AUDIO_DIR / f"{dialogue}.wav"


def text_path(root: Path, dialogue: str) -> Path:
    return root / TEXT_DIR / f"{dialogue}.json"


def oracle_path(root: Path, dialogue: str) -> Path:
    return root / ORACLE_DIR / f"{dialogue}.json"


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TrainingDataError(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError) as e:
        raise TrainingDataError(f"{path}: cannot read ({e})") from None
    except json.JSONDecodeError as e:
        raise TrainingDataError(f"{path}: bad JSON at line {e.lineno} column {e.colno} ({e.msg})") from None


def write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, ensure_ascii=False, indent=1) + "\n").encode("utf-8"))


def parse_words(raw: Any, where: Path | str) -> list[Word]:
    """Validate a transcript (file order kept)."""
    if not isinstance(raw, list):
        raise TrainingDataError(f"{where}: expected a JSON array of words, got {type(raw).__name__}")
    words = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise TrainingDataError(f"{where}: item {i} is not an object")
        missing = [k for k in ("speaker", "word", "start", "end") if k not in item]
        if missing:
            raise TrainingDataError(f"{where}: item {i} lacks {', '.join(missing)}")
        speaker, word, start, end = item["speaker"], item["word"], item["start"], item["end"]
        if speaker not in SPEAKERS:
            raise TrainingDataError(f"{where}: item {i} has speaker {speaker!r}; it must be 'A' or 'B'")
        if not isinstance(word, str):
            raise TrainingDataError(f"{where}: item {i} has a word that is not a string")
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in (start, end)):
            raise TrainingDataError(f"{where}: item {i} ({word!r}) has non-numeric start/end")
        if start < 0 or end < start:
            raise TrainingDataError(f"{where}: item {i} ({word!r}) has bad times {start}..{end}")
        words.append(Word(speaker, word, float(start), float(end)))
    if not words:
        raise TrainingDataError(f"{where}: no words")
    return words


def read_words(path: Path) -> list[Word]:
    return parse_words(read_json(path), path)


def audio_info(path: Path) -> AudioInfo:
    import soundfile as sf

    if not path.is_file():  # libsndfile would only say "System error"
        raise TrainingDataError(f"{path}: missing (each transcript needs its audio/<id>.wav)")
    try:
        info = sf.info(str(path))
    except (sf.SoundFileError, RuntimeError) as e:
        raise TrainingDataError(f"{path}: not a readable WAV ({str(e).strip()})") from None
    return AudioInfo(info.channels, info.samplerate, info.frames)


def check_stereo(path: Path) -> AudioInfo:
    info = audio_info(path)
    if info.channels != 2:
        raise TrainingDataError(
            f"{path}: {info.channels} channel(s); a dialogue needs 2 (left = speaker A, right = speaker B)"
        )
    if info.frames == 0:
        raise TrainingDataError(f"{path}: no samples")
    return info


def check_words_fit(words: Iterable[Word], info: AudioInfo, where: Path | str) -> None:
    """Words must lie inside the audio, and both speakers must speak (spec §4.4)."""
    words = list(words)
    outside = [w for w in words if w.end > info.duration + _EDGE_TOLERANCE_S]
    if outside:
        w = outside[0]
        raise TrainingDataError(
            f"{where}: {len(outside)} word(s) end after the audio ({info.duration:.2f} s), "
            f"first {w.word!r} at {w.start:.2f}-{w.end:.2f} s"
        )
    absent = [s for s in SPEAKERS if not any(w.speaker == s for w in words)]
    if absent:
        raise TrainingDataError(f"{where}: speaker {absent[0]} says nothing; a dialogue needs both A and B")


def validate_dialogue(root: Path, dialogue: str) -> tuple[AudioInfo, list[Word]]:
    info = check_stereo(audio_path(root, dialogue))
    words = read_words(text_path(root, dialogue))
    check_words_fit(words, info, text_path(root, dialogue))
    return info, words
