"""Real-file tests for kame_desktop.audio.files: formats, resampling, downmix, errors, framing, writing."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from kame_desktop.audio.files import frame_count, frames, read_audio, write_wav
from kame_desktop.errors import AudioFileError, KameError

SR = 24000
FRAME = 1920


def sine(sr: int, seconds: float = 1.0, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(x: np.ndarray, sr: int = SR) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[np.argmax(spec)])


def assert_sine_at_24k(x: np.ndarray, seconds: float = 1.0, amp: float = 0.5) -> None:
    assert x.dtype == np.float32
    assert x.ndim == 1
    # Duration is kept to within one sample of the resampler's rounding.
    assert abs(len(x) - seconds * SR) <= 1
    assert abs(peak_hz(x) - 440.0) < 2.0
    # Amplitude survives conversion; look away from the edges where the resampler filter rings.
    mid = x[len(x) // 4 : -len(x) // 4]
    assert np.max(np.abs(mid)) == pytest.approx(amp, abs=0.02)
    assert np.sqrt(np.mean(mid**2)) == pytest.approx(amp / np.sqrt(2), abs=0.02)
    assert np.max(np.abs(x)) <= 1.0


def test_wav_44k1_stereo_int16(tmp_path):
    p = tmp_path / "a.wav"
    s = sine(44100)
    sf.write(p, np.stack([s, s], axis=1), 44100, subtype="PCM_16")
    assert sf.info(p).channels == 2
    assert_sine_at_24k(read_audio(p))


def test_wav_48k_float32(tmp_path):
    p = tmp_path / "a.wav"
    sf.write(p, sine(48000), 48000, subtype="FLOAT")
    assert sf.info(p).subtype == "FLOAT"
    assert_sine_at_24k(read_audio(p))


def test_wav_16k_pcm24_extensible(tmp_path):
    p = tmp_path / "a.wav"
    sf.write(p, sine(16000), 16000, subtype="PCM_24", format="WAVEX")
    # Check the header really is WAVE_FORMAT_EXTENSIBLE (format tag 0xFFFE in the fmt chunk).
    raw = p.read_bytes()
    fmt = raw.index(b"fmt ")
    assert int.from_bytes(raw[fmt + 8 : fmt + 10], "little") == 0xFFFE
    assert_sine_at_24k(read_audio(p))


def test_wav_already_24k_is_unchanged(tmp_path):
    p = tmp_path / "a.wav"
    s = sine(SR)
    sf.write(p, s, SR, subtype="FLOAT")
    np.testing.assert_array_equal(read_audio(p), s)


def test_flac(tmp_path):
    p = tmp_path / "a.flac"
    sf.write(p, sine(44100), 44100, format="FLAC", subtype="PCM_16")
    assert_sine_at_24k(read_audio(p))


def test_ogg_vorbis(tmp_path):
    p = tmp_path / "a.ogg"
    sf.write(p, sine(48000), 48000, format="OGG", subtype="VORBIS")
    # Vorbis is lossy, but a pure tone at this level still passes the shared tolerances.
    assert_sine_at_24k(read_audio(p))


def test_downmix_averages_channels(tmp_path):
    p = tmp_path / "st.wav"
    left = sine(SR, amp=0.6)
    right = np.zeros_like(left)
    sf.write(p, np.stack([left, right], axis=1), SR, subtype="FLOAT")
    x = read_audio(p)
    np.testing.assert_allclose(x, left / 2, atol=1e-6)


def test_downmix_opposite_channels_cancel(tmp_path):
    p = tmp_path / "st.wav"
    s = sine(SR)
    sf.write(p, np.stack([s, -s], axis=1), SR, subtype="FLOAT")
    assert np.max(np.abs(read_audio(p))) < 1e-6


def test_missing_file(tmp_path):
    p = tmp_path / "nope.wav"
    with pytest.raises(AudioFileError, match="Input audio not found") as ei:
        read_audio(p)
    assert str(p) in str(ei.value)
    assert isinstance(ei.value, KameError)


def test_text_file_renamed_wav(tmp_path):
    p = tmp_path / "notes.wav"
    p.write_text("this is not audio\n" * 20)
    with pytest.raises(AudioFileError, match=r"not a readable audio file \(WAV, FLAC or OGG\)") as ei:
        read_audio(p)
    assert str(p) in str(ei.value)


def test_zero_byte_file(tmp_path):
    p = tmp_path / "zero.wav"
    p.write_bytes(b"")
    with pytest.raises(AudioFileError, match="zero.wav"):
        read_audio(p)


def test_empty_wav(tmp_path):
    p = tmp_path / "empty.wav"
    sf.write(p, np.zeros(0, dtype=np.float32), SR, subtype="PCM_16")
    assert sf.info(p).frames == 0
    with pytest.raises(AudioFileError, match="no audio samples") as ei:
        read_audio(p)
    assert str(p) in str(ei.value)


@pytest.mark.parametrize(
    ("n", "tail", "expected"),
    [
        (0, 0.0, 0),
        (FRAME, 0.0, 1),
        (3 * FRAME, 0.0, 3),
        (3 * FRAME + 1, 0.0, 4),
        (3 * FRAME - 1, 0.0, 3),
        (3 * FRAME, 0.16, 5),  # 0.16 s = 3840 samples = exactly two frames
        (3 * FRAME + 5, 0.5, 10),  # 5760 + 5 + 12000 = 17765 -> ceil(9.25) = 10
        (100, 1.0, 13),  # 100 + 24000 = 24100 -> ceil(12.55) = 13
    ],
)
def test_frame_count(n, tail, expected):
    assert frame_count(n, FRAME, tail, SR) == expected


@pytest.mark.parametrize(
    ("n", "tail"), [(FRAME * 4, 0.0), (FRAME * 4, 0.5), (FRAME * 4 + 7, 0.0), (5000, 0.3)]
)
def test_frames_content_and_padding(n, tail):
    rng = np.random.default_rng(0)
    x = rng.uniform(-0.9, 0.9, n).astype(np.float64)  # float64 in: frames must still be float32
    out = list(frames(x, FRAME, tail, SR))
    assert len(out) == frame_count(n, FRAME, tail, SR)
    assert all(f.shape == (FRAME,) and f.dtype == np.float32 for f in out)
    joined = np.concatenate(out)
    assert len(joined) >= n + round(tail * SR)
    assert len(joined) - (n + round(tail * SR)) < FRAME
    np.testing.assert_array_equal(joined[:n], x.astype(np.float32))
    assert not joined[n:].any()


def test_frames_other_rate_tail():
    out = list(frames(np.ones(10, np.float32), frame_size=160, tail_seconds=0.02, sample_rate=16000))
    # 10 + 320 = 330 samples -> 3 frames of 160
    assert len(out) == 3
    assert out[0][:10].tolist() == [1.0] * 10 and not out[0][10:].any()


def test_frames_empty_input():
    assert list(frames(np.zeros(0, np.float32))) == []


def test_write_wav_round_trip(tmp_path):
    p = tmp_path / "deep" / "er" / "out.wav"
    s = sine(SR)
    write_wav(p, s)
    info = sf.info(p)
    assert (info.samplerate, info.channels, info.subtype, info.format) == (SR, 1, "PCM_16", "WAV")
    back = read_audio(p)
    assert len(back) == len(s)
    np.testing.assert_allclose(back, s, atol=1 / 32767)


def test_write_wav_other_rate(tmp_path):
    p = tmp_path / "o.wav"
    write_wav(p, sine(16000), sample_rate=16000)
    assert sf.info(p).samplerate == 16000
    assert_sine_at_24k(read_audio(p))


def test_write_wav_clips(tmp_path):
    p = tmp_path / "loud.wav"
    write_wav(p, np.array([2.0, -3.0, 0.5], dtype=np.float32))
    data, _ = sf.read(p, dtype="int16")
    assert data.tolist() == [32767, -32768, 16384]


def test_write_wav_atomic_replace_leaves_no_temp(tmp_path):
    p = tmp_path / "out.wav"
    p.write_bytes(b"old contents")
    write_wav(p, sine(SR, 0.1))
    assert sorted(f.name for f in tmp_path.iterdir()) == ["out.wav"]
    assert sf.info(p).frames == int(SR * 0.1)


def test_write_wav_failure_keeps_old_file_and_no_temp(tmp_path, monkeypatch):
    p = tmp_path / "out.wav"
    p.write_bytes(b"old contents")

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("kame_desktop.audio.files.sf.write", boom)
    with pytest.raises(OSError, match="disk full"):
        write_wav(p, sine(SR, 0.1))
    assert p.read_bytes() == b"old contents"
    assert sorted(f.name for f in tmp_path.iterdir()) == ["out.wav"]
