"""The sound-card device on real PortAudio streams: a JACK dummy server (see conftest) gives a
paced, real-time device with no hardware; its ports can be wired back to us (loopback) so what
we play is what we record. Plus the ring buffer and the no-PortAudio path, which need no server."""

from __future__ import annotations

import importlib.abc
import os
import re
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from kame_desktop.audio.aec import EchoCanceller
from kame_desktop.audio.device import DuplexAudio, dbfs, list_devices, resolve_device
from kame_desktop.audio.ring import SpscRing
from kame_desktop.errors import DeviceError
from kame_desktop.events import FRAME_SECONDS, FRAME_SIZE, SAMPLE_RATE

# --- helpers -------------------------------------------------------------------------------------


def tone(n_frames: int, freq: float = 1000.0, level: float = 0.25) -> list[np.ndarray]:
    t = np.arange(n_frames * FRAME_SIZE) / SAMPLE_RATE
    x = (level * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return [x[i : i + FRAME_SIZE] for i in range(0, len(x), FRAME_SIZE)]


def loopback(audio: DuplexAudio) -> None:
    """Wire our JACK output port into our input port: what we play comes back to read(). Then
    skip what was recorded meanwhile, so timings start afresh."""
    ports = subprocess.run(["jack_lsp"], capture_output=True, text=True, check=True, env=os.environ).stdout.split()
    # PortAudio numbers ports across streams (in_0, then in_1 for the next stream...); only
    # the open stream's ports exist. Both output ports carry the same (mono) signal.
    out = min((p for p in ports if re.fullmatch(r"PortAudio[^:]*:out_\d+", p)), key=lambda p: int(p.split("_")[-1]))
    inp = next(p for p in ports if re.fullmatch(r"PortAudio[^:]*:in_\d+", p))
    subprocess.run(["jack_connect", out, inp], check=True, env=os.environ)
    drain(audio)


def drain(audio: DuplexAudio) -> None:
    """Read until a read has to wait for the device (nothing recorded is waiting any more)."""
    while True:
        start = time.monotonic()
        audio.read()
        if time.monotonic() - start > 0.03:
            return


def read_for(audio: DuplexAudio, seconds: float, play: list[np.ndarray] | None = None) -> list[np.ndarray]:
    """Read (and play one frame per frame read, as the session does) for `seconds` of wall time."""
    frames = []
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        frame = audio.read()
        assert frame is not None
        frames.append(frame)
        audio.write(play[len(frames) % len(play)] if play else np.zeros(FRAME_SIZE, np.float32))
    return frames


@pytest.fixture
def duplex(jack_server):
    """Factory for DuplexAudio on the JACK device; every one is closed at the end."""
    opened: list[DuplexAudio] = []

    def make(**kwargs) -> DuplexAudio:
        kwargs.setdefault("strict", True)
        audio = DuplexAudio(jack_server.device, jack_server.device, **kwargs)
        opened.append(audio)
        return audio

    yield make
    for audio in opened:
        audio.close()


# --- the ring buffer ------------------------------------------------------------------------------


def test_ring_wraps_around_and_bounds_what_it_holds():
    ring = SpscRing(10)
    out = np.zeros(10, np.float32)
    assert ring.write(np.arange(7, dtype=np.float32)) == 7
    assert ring.read_into(out[:5]) == 5 and list(out[:5]) == [0, 1, 2, 3, 4]
    assert ring.write(np.arange(10, 20, dtype=np.float32)) == 8  # 2 left + 8 fit; 2 samples lost
    assert ring.available() == 10 and ring.space() == 0
    assert ring.skip(3) == 3
    assert ring.read_into(out) == 7 and list(out[:7]) == [11, 12, 13, 14, 15, 16, 17]
    assert ring.available() == 0 and ring.read_into(out) == 0


# --- listing and choosing devices -------------------------------------------------------------------


def test_lists_the_jack_device_with_default_marks(jack_server):
    devices = list_devices()
    system = next(d for d in devices if d.name == jack_server.device)
    assert system.is_input and system.is_output and system.hostapi.startswith("JACK")
    assert system.default_input and system.default_output  # the only device here
    assert resolve_device("SYS", "input") == system  # a case-insensitive part of the name works


def test_unknown_device_name_says_what_to_do(jack_server):
    with pytest.raises(DeviceError, match=r"Microphone 'Nope USB' not found — .*Settings.*'system'"):
        DuplexAudio("Nope USB", strict=True)
    with pytest.raises(DeviceError, match=r"Speaker 'Nope USB' not found"):
        DuplexAudio(None, "Nope USB", strict=True)


def test_unknown_device_without_strict_runs_on_paced_silence(jack_server):
    errors: list[str] = []
    audio = DuplexAudio("Nope USB", on_error=errors.append, retry_interval=None)
    try:
        assert errors and errors[0].startswith("Microphone 'Nope USB' not found")
        assert audio.status == errors[0]
        start = time.monotonic()
        frames = [audio.read() for _ in range(4)]
        elapsed = time.monotonic() - start
        assert all(f is not None and not f.any() and f.shape == (FRAME_SIZE,) for f in frames)
        assert 0.2 <= elapsed < 0.45  # paced by a timer: 4 × 80 ms (the first is due at once)
        audio.write(np.ones(FRAME_SIZE, np.float32))  # accepted and dropped, no exception
    finally:
        audio.close()
    assert audio.read() is None and audio.status == "closed"


def test_no_microphone_at_all_says_to_plug_one_in(monkeypatch):
    import kame_desktop.audio.device as device

    speaker_only = device.AudioDevice(0, "HDMI", "ALSA", 0, 2, 48000.0, default_output=True)
    monkeypatch.setattr(device, "list_devices", lambda: [speaker_only])
    with pytest.raises(DeviceError, match="^No microphone found — plug one in or pick another in Settings$"):
        DuplexAudio(strict=True)


class _NoPortAudio(importlib.abc.MetaPathFinder):
    """Makes `import sounddevice` fail as it does without the PortAudio library."""

    def find_spec(self, name, path=None, target=None):
        if name == "sounddevice":
            raise OSError("PortAudio library not found")
        return None


def test_missing_portaudio_says_which_package_to_install(monkeypatch):
    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)  # restored afterwards
    monkeypatch.setattr(sys, "meta_path", [_NoPortAudio(), *sys.meta_path])
    with pytest.raises(DeviceError, match=r"^PortAudio is not installed: sudo apt-get install libportaudio2$"):
        list_devices()
    errors: list[str] = []
    audio = DuplexAudio(on_error=errors.append, retry_interval=None)  # the GUI keeps going
    try:
        assert errors == ["PortAudio is not installed: sudo apt-get install libportaudio2"]
        frame = audio.read()
        assert frame is not None and not frame.any()
    finally:
        audio.close()


# --- real streams ----------------------------------------------------------------------------------------


def test_reads_real_time_frames_and_plays_without_errors(duplex):
    audio = duplex()
    assert audio.device_rates == (SAMPLE_RATE, SAMPLE_RATE) and audio.status == "ok"
    drain(audio)  # frames recorded since the stream started come at once: time from here
    frames = read_for(audio, 1.0, play=tone(4))
    assert 11 <= len(frames) <= 14, len(frames)  # 12.5 frames per second: paced, not instant
    assert all(f.shape == (FRAME_SIZE,) and f.dtype == np.float32 for f in frames)
    assert audio.status == "ok" and audio.dropped_input_frames == 0
    assert audio.output_underruns <= 1  # at most the very start
    assert audio.levels.output_db == pytest.approx(dbfs(tone(1)[0]), abs=0.5)


def test_output_queue_stays_bounded_when_frames_come_too_fast(duplex):
    audio = duplex(max_output_backlog=4)
    audio.read()
    for frame in tone(20):  # 1.6 s of audio at once: a faster input clock, or a burst
        audio.write(frame)
    assert audio.dropped_output_samples >= 15 * FRAME_SIZE
    assert audio._streams.out_ring.available() <= 4 * FRAME_SIZE  # at most 320 ms queued


def test_close_is_quick_and_wakes_a_blocked_read(duplex):
    audio = duplex()
    audio.read()
    got: list[object] = []
    reader = threading.Thread(target=lambda: got.extend([audio.read(), audio.read(), audio.read()]))
    reader.start()
    time.sleep(0.03)  # the reader is waiting for its first frame
    start = time.monotonic()
    audio.close()
    closed_in = time.monotonic() - start
    reader.join(0.2)
    assert closed_in < 0.2, closed_in
    assert not reader.is_alive() and None in got
    assert audio.read() is None and audio.status == "closed"


def test_slow_consumer_drops_stale_frames_instead_of_queueing(duplex):
    audio = duplex(max_input_backlog=4)
    audio.read()
    for _ in range(4):
        time.sleep(0.5)  # a front-end far slower than real time
        assert audio.read() is not None
        assert audio.input_lag_s < 5 * FRAME_SECONDS  # the bound: 4 frames and a partial one
    assert audio.dropped_input_frames >= 4  # 6 frames arrive per 0.5 s, 1 is read, 4 may wait
    # What waits is at most the bound: it comes at once, then reads are paced again.
    start = time.monotonic()
    for _ in range(4):
        audio.read()
    assert time.monotonic() - start < 0.1
    start = time.monotonic()
    for _ in range(3):
        audio.read()
    assert time.monotonic() - start > 0.12


def test_loopback_carries_our_output_to_our_input(duplex):
    audio = duplex()
    audio.read()
    loopback(audio)
    frames = read_for(audio, 1.0, play=tone(4))
    heard = np.concatenate(frames[-6:])
    assert dbfs(heard) == pytest.approx(dbfs(tone(1)[0]), abs=1.5)  # the tone, at its level
    spectrum = np.abs(np.fft.rfft(heard))
    assert np.argmax(spectrum) * SAMPLE_RATE / len(heard) == pytest.approx(1000, abs=10)


def test_echo_canceller_on_the_device_removes_our_own_output(duplex):
    rng = np.random.default_rng(0)
    noise = [(0.1 * rng.standard_normal(FRAME_SIZE)).astype(np.float32) for _ in range(64)]
    plain = duplex()
    plain.read()
    loopback(plain)
    echo_db = dbfs(np.concatenate(read_for(plain, 1.0, play=noise)[-5:]))
    plain.close()
    audio = duplex(echo_canceller=EchoCanceller())
    audio.read()
    loopback(audio)
    frames = read_for(audio, 2.5, play=noise)  # WebRTC adapts within the first second or so
    residual_db = dbfs(np.concatenate(frames[-8:]))
    assert echo_db > -25
    assert residual_db < echo_db - 20, (echo_db, residual_db)


def test_device_without_24khz_is_resampled(duplex, jack_server):
    jack_server.restart(48000)
    try:
        audio = duplex()
        assert audio.device_rates == (48000, 48000)
        audio.read()
        loopback(audio)
        frames = read_for(audio, 1.0, play=tone(4))
        assert 11 <= len(frames) <= 14, len(frames)
        assert all(f.shape == (FRAME_SIZE,) for f in frames)
        heard = np.concatenate(frames[-6:])  # soxr both ways: still a 1 kHz tone at 24 kHz
        assert np.argmax(np.abs(np.fft.rfft(heard))) * SAMPLE_RATE / len(heard) == pytest.approx(1000, abs=10)
        assert dbfs(heard) == pytest.approx(dbfs(tone(1)[0]), abs=1.5)
        audio.close()
    finally:
        jack_server.restart(24000)


def test_stalled_device_reports_and_recovers_on_reopen(duplex, jack_server):
    errors: list[str] = []
    recovered: list[bool] = []
    audio = duplex(on_error=errors.append, on_recover=lambda: recovered.append(True),
                   stall_timeout=0.5, retry_interval=None)
    audio.read()
    jack_server.pause()  # the device stops calling back, as when it is unplugged
    try:
        start = time.monotonic()
        frames = [audio.read() for _ in range(15)]  # the stall is noticed after 0.5 s
        elapsed = time.monotonic() - start
    finally:
        jack_server.resume()
    assert errors and "microphone stopped" in errors[0] and "Settings" in errors[0]
    assert audio.status == errors[0]
    assert all(f is not None and not f.any() for f in frames)
    assert 1.1 < elapsed < 0.5 + 15 * FRAME_SECONDS + 0.2  # a 0.5 s hiccup, then paced silence
    assert audio.reopen()  # the GUI calls this when the device list changes
    assert recovered == [True] and audio.status == "ok"
    read_for(audio, 0.3)
    assert audio.status == "ok"
