"""Audio sources and sinks behind one small interface, so the session is the same whether audio
comes from a file, a sound card or nowhere.

A source's `read()` returns the next 1920-sample float32 frame, or None at the end. A paced
(real-time) source blocks until the frame is due, so the session clock matches wall time and ASR
and LLM timings are real. The sounddevice-backed device comes with the desktop app.
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Protocol

import numpy as np
import soundfile as sf

from kame_desktop.audio.files import frame_count, open_audio
from kame_desktop.errors import AudioFileError
from kame_desktop.events import FRAME_SECONDS, FRAME_SIZE, SAMPLE_RATE
from kame_desktop.fileio import atomic_writer


class AudioSource(Protocol):
    def read(self) -> np.ndarray | None: ...


class AudioSink(Protocol):
    def write(self, frame: np.ndarray) -> None: ...

    def close(self) -> None: ...


class _Pacer:
    """Sleeps until frame i is due (i × 80 ms after the first read)."""

    def __init__(self) -> None:
        self._start: float | None = None

    def wait(self, index: int) -> None:
        now = time.monotonic()
        if self._start is None:
            self._start = now
        delay = self._start + index * FRAME_SECONDS - now
        if delay > 0:
            time.sleep(delay)


class FileSource:
    """Frames of an in-memory signal (see audio.files.read_audio) followed by `tail_seconds` of
    silence; paced at real time when `realtime`."""

    def __init__(self, pcm: np.ndarray, tail_seconds: float = 0.0, realtime: bool = False) -> None:
        self.frames_total = frame_count(len(pcm), FRAME_SIZE, tail_seconds, SAMPLE_RATE)
        self._pcm = np.asarray(pcm, dtype=np.float32).reshape(-1)
        self._index = 0
        self._pacer = _Pacer() if realtime else None

    def read(self) -> np.ndarray | None:
        if self._index >= self.frames_total:
            return None
        if self._pacer:
            self._pacer.wait(self._index)
        start = self._index * FRAME_SIZE
        frame = np.zeros(FRAME_SIZE, dtype=np.float32)
        chunk = self._pcm[start : start + FRAME_SIZE]
        frame[: len(chunk)] = chunk
        self._index += 1
        return frame


class AudioFileSource:
    """Frames of an audio file (any rate and channels, as read_audio takes them) followed by
    `tail_seconds` of silence, read and resampled block by block: a two-hour recording costs a
    few hundred kB of memory, not gigabytes. Paced at real time when `realtime` (settable until
    the first read). Opening checks the file (AudioFileError, as read_audio)."""

    BLOCK_S = 1.0  # read from the file a second at a time

    def __init__(self, path: Path, tail_seconds: float = 0.0, realtime: bool = False) -> None:
        import soxr

        self._path = path
        self._file = open_audio(path)
        rate = self._file.samplerate
        self._samples = math.ceil(self._file.frames * SAMPLE_RATE / rate)  # of the signal at 24 kHz
        self.frames_total = frame_count(self._samples, FRAME_SIZE, tail_seconds, SAMPLE_RATE)
        self._resampler = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ") \
            if rate != SAMPLE_RATE else None  # fmt: skip
        self._block = max(1, round(self.BLOCK_S * rate))
        self._pending = np.zeros(0, dtype=np.float32)
        self._given = 0  # signal samples handed out
        self._index = 0
        self.realtime = realtime
        self._pacer: _Pacer | None = None

    def read(self) -> np.ndarray | None:
        if self._index >= self.frames_total:
            self.close()
            return None
        if self._pacer is None and self.realtime:
            self._pacer = _Pacer()
        if self._pacer:
            self._pacer.wait(self._index)
        while len(self._pending) < FRAME_SIZE and not self._file.closed:
            self._pending = np.concatenate([self._pending, self._next_block()])
        frame = np.zeros(FRAME_SIZE, dtype=np.float32)
        n = min(FRAME_SIZE, len(self._pending), max(self._samples - self._given, 0))
        frame[:n] = self._pending[:n]
        self._pending = self._pending[FRAME_SIZE:]
        self._given += n
        self._index += 1
        return frame

    def _next_block(self) -> np.ndarray:
        try:
            data = self._file.read(self._block, dtype="float32", always_2d=True)
        except (sf.SoundFileError, RuntimeError, ValueError) as e:
            self._file.close()
            raise AudioFileError(f"{self._path} could not be read to its end ({e}); convert it to WAV or FLAC") from e
        last = len(data) < self._block
        mono = data.mean(axis=1, dtype=np.float32)
        if self._resampler is not None:
            mono = self._resampler.resample_chunk(mono, last=last)
        if last:
            self._file.close()
        # Float files and resampler overshoot can exceed full scale; the model expects [-1, 1].
        return np.clip(mono, -1.0, 1.0).astype(np.float32, copy=False)

    def close(self) -> None:
        self._file.close()


class NullSource:
    """Silence, for `seconds` (forever when None); paced when `realtime`."""

    def __init__(self, seconds: float | None = None, realtime: bool = False) -> None:
        self._frames = None if seconds is None else frame_count(0, FRAME_SIZE, seconds, SAMPLE_RATE)
        self._index = 0
        self._pacer = _Pacer() if realtime else None

    def read(self) -> np.ndarray | None:
        if self._frames is not None and self._index >= self._frames:
            return None
        if self._pacer:
            self._pacer.wait(self._index)
        self._index += 1
        return np.zeros(FRAME_SIZE, dtype=np.float32)


class WavSink:
    """Streams 16-bit mono frames to a WAV file (memory stays flat over long sessions); the file
    appears at `path` only when closed, atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer = atomic_writer(path)
        self._file = self._writer.__enter__()
        # Through the descriptor, not the file object: libsndfile then reports a full disk as an
        # error instead of a traceback printed from inside its write callback.
        self._wav = sf.SoundFile(self._file.fileno(), "w", SAMPLE_RATE, 1, "PCM_16", format="WAV", closefd=False)
        self.frames_written = 0

    def write(self, frame: np.ndarray) -> None:
        try:
            self._wav.write(np.clip(frame, -1.0, 1.0))
        except sf.SoundFileError as e:  # libsndfile says "System error." for a full disk
            raise OSError(f"writing {self.path} failed ({e})") from None
        self.frames_written += 1

    def close(self) -> None:
        try:
            self._wav.close()
        except sf.SoundFileError as e:
            raise OSError(f"writing {self.path} failed ({e})") from None
        self._writer.__exit__(None, None, None)

    def abort(self) -> None:
        """Drop the partial file (the run failed)."""
        with contextlib.suppress(sf.SoundFileError, OSError):  # the failure may be the disk's
            self._wav.close()
        error = RuntimeError("aborted")
        self._writer.__exit__(type(error), error, None)  # removes the temp file


class NullSink:
    def __init__(self) -> None:
        self.frames_written = 0

    def write(self, frame: np.ndarray) -> None:
        self.frames_written += 1

    def close(self) -> None:
        pass
