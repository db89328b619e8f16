"""Read, frame and write audio files: everything the rest of the app sees is float32 mono."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from kame_desktop.errors import AudioFileError
from kame_desktop.fileio import atomic_writer

__all__ = ["AudioFileError", "frame_count", "frames", "open_audio", "read_audio", "write_wav"]


def open_audio(path: str | os.PathLike[str]) -> sf.SoundFile:
    """The file opened for reading (the caller closes it), or an AudioFileError that says why not."""
    p = Path(path)
    if not p.is_file():
        raise AudioFileError(f"Input audio not found: {path}")
    try:
        f = sf.SoundFile(str(p))
    except (sf.SoundFileError, RuntimeError, ValueError) as e:
        raise _unreadable(path, e) from e
    if f.frames == 0:
        f.close()
        raise AudioFileError(f"{path} contains no audio samples; record or pick a non-empty file.")
    return f


def _unreadable(path: str | os.PathLike[str], e: Exception) -> AudioFileError:
    return AudioFileError(
        f"{path} is not a readable audio file (WAV, FLAC or OGG): {str(e).rstrip('.')}. Convert it to one of those."
    )


def read_audio(path: str | os.PathLike[str], sample_rate: int = 24000) -> np.ndarray:
    """Return the file as float32 mono in [-1, 1] at `sample_rate`, whatever its rate and channels."""
    with open_audio(path) as f:
        try:
            # always_2d gives one code path for mono and multichannel; libsndfile scales ints to [-1, 1].
            data, sr_in = f.read(dtype="float32", always_2d=True), f.samplerate
        except (sf.SoundFileError, RuntimeError, ValueError) as e:
            raise _unreadable(path, e) from e
    if data.shape[0] == 0:
        raise AudioFileError(f"{path} contains no audio samples; record or pick a non-empty file.")
    mono = data.mean(axis=1, dtype=np.float32)
    if sr_in != sample_rate:
        mono = soxr.resample(mono, sr_in, sample_rate, quality="HQ")
    # Float files and resampler overshoot can exceed full scale; the model expects [-1, 1].
    return np.clip(mono, -1.0, 1.0).astype(np.float32, copy=False)


def frame_count(
    n_samples: int, frame_size: int = 1920, tail_seconds: float = 0.0, sample_rate: int = 24000
) -> int:
    """Number of whole frames covering `n_samples` plus `tail_seconds` of silence (rounded up)."""
    if frame_size <= 0:
        raise ValueError(f"frame_size must be positive, got {frame_size}")
    tail = round(max(tail_seconds, 0.0) * sample_rate)
    return math.ceil((n_samples + tail) / frame_size)


def frames(
    pcm: np.ndarray, frame_size: int = 1920, tail_seconds: float = 0.0, sample_rate: int = 24000
) -> Iterator[np.ndarray]:
    """Yield float32 frames of exactly `frame_size`: the input, then the silent tail, zero-padded."""
    x = np.asarray(pcm, dtype=np.float32).reshape(-1)
    n = frame_count(len(x), frame_size, tail_seconds, sample_rate)
    # Padding once up front keeps every frame the same size without per-frame branching.
    padded = np.zeros(n * frame_size, dtype=np.float32)
    padded[: len(x)] = x
    for i in range(n):
        yield padded[i * frame_size : (i + 1) * frame_size]


def write_wav(path: str | os.PathLike[str], pcm: np.ndarray, sample_rate: int = 24000) -> None:
    """Write 16-bit PCM mono WAV atomically, so a crash never leaves a half-written file at `path`."""
    x = np.clip(np.asarray(pcm, dtype=np.float32).reshape(-1), -1.0, 1.0)
    with atomic_writer(Path(path)) as f:
        sf.write(f, x, sample_rate, subtype="PCM_16", format="WAV")
