"""`train prepare SRC OUT`: dialogues into the canonical layout (spec §4.1).

Two importers, chosen by what SRC holds:
  * the canonical layout itself (`audio/`, `text/`, optional `oracle_raw/`): every dialogue is
    validated (stereo, words inside the audio, both speakers, well-formed JSON) and copied;
  * a folder of bare WAVs without transcripts — two-channel `<id>.wav` (left = A, right = B) or
    per-speaker pairs `<id>_A.wav` + `<id>_B.wav` — transcribed channel by channel with
    faster-whisper's word timestamps (the embedded Whisper base unless told otherwise).
A canonical transcript keeps its file order (the reference generates oracle events in file order,
and overlapping speech makes that differ from start order); a Whisper transcript is sorted by
start. Transcripts are written after the audio, so a transcript marks a finished dialogue: a rerun
skips it. Each bad dialogue is one line; the others go on.
"""

from __future__ import annotations

import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kame_desktop.errors import TrainingDataError
from kame_desktop.fileio import atomic_writer
from kame_desktop.training.layout import (
    AUDIO_DIR,
    ORACLE_DIR,
    TEXT_DIR,
    AudioInfo,
    Word,
    audio_path,
    check_words_fit,
    oracle_path,
    read_json,
    text_path,
    validate_dialogue,
    write_json,
)
from kame_desktop.training.progress import StepProgress, StepReport

log = logging.getLogger(__name__)

WHISPER_RATE = 16_000
_PAIR = re.compile(r"^(?P<id>.+)[_.-](?P<speaker>[AB])$")


@dataclass(frozen=True)
class PrepareSettings:
    whisper_model: str = "base"  # "base" = embedded; or a CTranslate2 folder / faster-whisper name
    language: str | None = "en"
    threads: int = 1
    force: bool = False


def normalise_words(words: list[Word]) -> list[Word]:
    """Stripped, non-empty words, in the order given."""
    return [Word(w.speaker, w.word.strip(), w.start, w.end) for w in words if w.word.strip()]


def _is_canonical(src: Path) -> bool:
    return (src / TEXT_DIR).is_dir() and (src / AUDIO_DIR).is_dir()


def _done(out: Path, dialogue: str) -> bool:
    return text_path(out, dialogue).exists() and audio_path(out, dialogue).exists()


def prepare(src: Path, out: Path, settings: PrepareSettings = PrepareSettings(), show_progress: bool = True) -> StepReport:
    if not src.is_dir():
        raise TrainingDataError(f"{src}: not a folder")
    if _is_canonical(src):
        return _import_canonical(src, out, settings, show_progress)
    return _import_bare(src, out, settings, show_progress)


# --- canonical ---------------------------------------------------------------------------------


def _import_canonical(src: Path, out: Path, settings: PrepareSettings, show: bool) -> StepReport:
    report = StepReport("prepare")
    in_place = src.resolve() == out.resolve()
    texts = {p.stem for p in (src / TEXT_DIR).glob("*.json") if not p.name.startswith(".")}
    audios = {p.stem for p in (src / AUDIO_DIR).glob("*.wav") if not p.name.startswith(".")}
    ids = sorted(texts | audios)
    with StepProgress(report, len(ids), show) as progress:
        for dialogue in ids:
            with progress.dialogue(dialogue):
                if dialogue not in texts:
                    raise TrainingDataError(f"{audio_path(src, dialogue)} has no transcript {text_path(src, dialogue)}")
                if dialogue not in audios:
                    raise TrainingDataError(f"{text_path(src, dialogue)} has no audio {audio_path(src, dialogue)}")
                if not in_place and _done(out, dialogue) and not settings.force:
                    report.skipped += 1
                    continue
                _info, words = validate_dialogue(src, dialogue)
                oracle = None
                if oracle_path(src, dialogue).exists():
                    oracle = read_json(oracle_path(src, dialogue))
                    if not isinstance(oracle, list):
                        raise TrainingDataError(f"{oracle_path(src, dialogue)}: expected a JSON array of events")
                if not in_place:
                    _copy(audio_path(src, dialogue), audio_path(out, dialogue))
                    if oracle is not None:
                        _copy(oracle_path(src, dialogue), oracle_path(out, dialogue))
                    write_json(text_path(out, dialogue), [w.to_json() for w in normalise_words(words)])
                report.done += 1
    return report


def _copy(src: Path, dst: Path) -> None:
    with src.open("rb") as f, atomic_writer(dst) as g:
        shutil.copyfileobj(f, g)


# --- bare WAVs + Whisper -----------------------------------------------------------------------


def _group_wavs(src: Path) -> dict[str, dict[str, Path]]:
    """{id: {"AB": path}} for two-channel files, {id: {"A": path, "B": path}} for pairs."""
    groups: dict[str, dict[str, Path]] = {}
    for path in sorted(src.glob("*.wav")):
        if path.name.startswith("."):
            continue
        m = _PAIR.match(path.stem)
        if m:
            groups.setdefault(m["id"], {})[m["speaker"]] = path
        else:
            groups.setdefault(path.stem, {})["AB"] = path
    return groups


def _read(path: Path) -> tuple[np.ndarray, int]:
    import soundfile as sf

    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError) as e:
        raise TrainingDataError(f"{path}: not a readable WAV ({str(e).strip()})") from None
    if data.shape[0] == 0:
        raise TrainingDataError(f"{path}: no samples")
    return data, rate


def load_channels(files: dict[str, Path]) -> tuple[np.ndarray, int]:
    """[samples, 2] float32 (A, B) and the sample rate, or a TrainingDataError saying why not."""
    if "AB" in files:
        if len(files) > 1:
            raise TrainingDataError(f"{files['AB']} and per-speaker files share the id; keep one form")
        data, rate = _read(files["AB"])
        if data.shape[1] != 2:
            raise TrainingDataError(
                f"{files['AB']}: {data.shape[1]} channel(s); give two-channel WAVs (left = A, right = B) "
                "or pairs <id>_A.wav + <id>_B.wav"
            )
        return data, rate
    missing = [s for s in ("A", "B") if s not in files]
    if missing:
        other = next(iter(files.values()))
        raise TrainingDataError(f"{other}: no matching speaker-{missing[0]} file")
    (a, rate_a), (b, rate_b) = _read(files["A"]), _read(files["B"])
    for path, d in ((files["A"], a), (files["B"], b)):
        if d.shape[1] != 1:
            raise TrainingDataError(f"{path}: {d.shape[1]} channels; a per-speaker file must be mono")
    if rate_a != rate_b:
        raise TrainingDataError(f"{files['A']} is {rate_a} Hz but {files['B']} is {rate_b} Hz; resample one")
    if len(a) != len(b):
        raise TrainingDataError(
            f"{files['A']} has {len(a)} samples but {files['B']} has {len(b)}; the channels of a dialogue "
            "must be the same length"
        )
    return np.concatenate([a, b], axis=1), rate_a


class WhisperWords:
    """Word timestamps from faster-whisper (loaded on first use)."""

    def __init__(self, model: str = "base", language: str | None = "en", threads: int = 1) -> None:
        self.model_name = model
        self.language = language
        self.threads = threads
        self._model = None

    def _load(self):
        if self._model is None:
            from faster_whisper import WhisperModel

            path = self.model_name
            if path == "base":
                from kame_desktop.models.embedded import embedded_whisper_model

                path = str(embedded_whisper_model())
            try:
                self._model = WhisperModel(path, device="cpu", compute_type="int8", cpu_threads=self.threads)
            except Exception as e:  # ctranslate2 raises plain RuntimeError/ValueError
                raise TrainingDataError(f"cannot load Whisper model {self.model_name!r}: {e}") from None
        return self._model

    def words(self, mono: np.ndarray, rate: int, speaker: str) -> list[Word]:
        import soxr

        audio = soxr.resample(mono, rate, WHISPER_RATE) if rate != WHISPER_RATE else mono
        segments, _info = self._load().transcribe(
            audio.astype(np.float32), language=self.language, word_timestamps=True, beam_size=1,
            condition_on_previous_text=False, vad_filter=False,
        )
        duration = len(mono) / rate
        out = []
        for segment in segments:
            for w in segment.words or []:
                if w.word.strip():
                    out.append(Word(speaker, w.word.strip(), round(min(w.start, duration), 3), round(min(w.end, duration), 3)))
        return out


def write_stereo(path: Path, data: np.ndarray, rate: int) -> None:
    import soundfile as sf

    with atomic_writer(path) as f:
        sf.write(f, np.clip(data, -1.0, 1.0), rate, format="WAV", subtype="PCM_16")


def _import_bare(src: Path, out: Path, settings: PrepareSettings, show: bool) -> StepReport:
    report = StepReport("prepare")
    groups = _group_wavs(src)
    if not groups:
        raise TrainingDataError(f"{src}: no WAV files, and not the canonical layout (audio/ + text/)")
    whisper = WhisperWords(settings.whisper_model, settings.language, settings.threads)
    with StepProgress(report, len(groups), show) as progress:
        for dialogue, files in groups.items():
            with progress.dialogue(dialogue):
                if _done(out, dialogue) and not settings.force:
                    report.skipped += 1
                    continue
                data, rate = load_channels(files)
                words = whisper.words(data[:, 0], rate, "A") + whisper.words(data[:, 1], rate, "B")
                check_words_fit(words, AudioInfo(2, rate, len(data)), f"{dialogue} (transcribed)")
                write_stereo(audio_path(out, dialogue), data, rate)
                # Two channels transcribed apart: start order interleaves them into one dialogue.
                ordered = sorted(normalise_words(words), key=lambda w: w.start)
                write_json(text_path(out, dialogue), [w.to_json() for w in ordered])
                report.done += 1
                report.count("words", len(words))
    (out / ORACLE_DIR).mkdir(parents=True, exist_ok=True)
    return report
