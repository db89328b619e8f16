"""Audio file sources: a file streamed block by block gives the frames that reading it whole
gives, and its memory does not grow with the file's length."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from kame_desktop.audio.files import read_audio
from kame_desktop.audio.sources import AudioFileSource, FileSource
from kame_desktop.errors import AudioFileError
from kame_desktop.events import FRAME_SIZE


def frames_of(source) -> np.ndarray:
    out = []
    while (frame := source.read()) is not None:
        out.append(frame)
    return np.concatenate(out)


@pytest.mark.parametrize("rate", [24_000, 44_100, 16_000])
def test_a_streamed_file_gives_the_frames_of_the_whole_file(tmp_path, rate):
    t = np.arange(int(2.3 * rate)) / rate
    stereo = np.stack([0.5 * np.sin(2 * np.pi * 440 * t), 0.3 * np.sin(2 * np.pi * 660 * t)], axis=1)
    path = tmp_path / "in.wav"
    sf.write(path, stereo, rate, subtype="PCM_16")
    whole = FileSource(read_audio(path), tail_seconds=0.5)
    streamed = AudioFileSource(path, tail_seconds=0.5)
    assert streamed.frames_total == whole.frames_total
    a, b = frames_of(whole), frames_of(streamed)
    assert len(a) == len(b) == whole.frames_total * FRAME_SIZE
    assert np.max(np.abs(a - b)) < 2e-3  # the same signal (the resampler runs in blocks)
    assert streamed.read() is None


def test_a_bad_file_fails_when_opened(tmp_path):
    (tmp_path / "bad.wav").write_bytes(b"RIFF nonsense")
    with pytest.raises(AudioFileError, match="not a readable audio file"):
        AudioFileSource(tmp_path / "bad.wav")
    with pytest.raises(AudioFileError, match="not found"):
        AudioFileSource(tmp_path / "missing.wav")


STREAM = """
import resource, sys
from pathlib import Path
from kame_desktop.audio.sources import AudioFileSource
source = AudioFileSource(Path(sys.argv[1]), tail_seconds=1.0)
source.read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
n = 1
while source.read() is not None:
    n += 1
print(n, before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def test_a_long_file_streams_in_flat_memory(tmp_path):
    # 10 minutes of 48 kHz stereo (110 MB): read whole and resampled, ~400 MB of float arrays.
    path = tmp_path / "long.wav"
    second = (np.random.default_rng(0).standard_normal((48_000, 2)) * 0.1).astype(np.float32)
    with sf.SoundFile(path, "w", 48_000, 2, "PCM_16") as f:
        for _ in range(600):
            f.write(second)
    proc = subprocess.run([sys.executable, "-c", STREAM, str(path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    frames, before_kb, after_kb = map(int, proc.stdout.split())
    assert frames == -(-(600 + 1) * 24_000 // FRAME_SIZE)  # whole frames, the last padded
    assert after_kb - before_kb < 32_000, f"max RSS grew by {(after_kb - before_kb) / 1000:.0f} MB"
