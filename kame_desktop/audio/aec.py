"""Acoustic echo cancellation: the companion must neither hear itself nor barge in on itself when
the microphone picks up the speakers (open mic, no headset).

`EchoCanceller` wraps WebRTC's audio processing module as bound by `livekit`
(`rtc.AudioProcessingModule`): `far_end(frame)` gives it what is being played (the reference)
and `process(mic_frame)` returns the microphone with that echo removed (plus noise suppression).
WebRTC works in 10 ms frames of int16, so each 80 ms frame is cut into 8 sub-frames of 240
samples; the sub-frame buffers are allocated once and reused. `NullEchoCanceller` is the "off"
setting (headsets): same interface, passes the microphone through.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from kame_desktop.errors import DeviceError
from kame_desktop.events import SAMPLE_RATE


class EchoCancellerLike(Protocol):
    def far_end(self, frame: np.ndarray) -> None: ...

    def process(self, mic_frame: np.ndarray) -> np.ndarray: ...


class NullEchoCanceller:
    """Echo cancellation off: the microphone goes through unchanged."""

    def far_end(self, frame: np.ndarray) -> None:
        pass

    def process(self, mic_frame: np.ndarray) -> np.ndarray:
        return np.asarray(mic_frame, dtype=np.float32)


class _Frame10ms:
    """One reusable 10 ms int16 buffer: a numpy view for us and an rtc.AudioFrame over the same
    bytes for WebRTC, which processes it in place."""

    def __init__(self, rtc, sample_rate: int) -> None:
        self.n = sample_rate // 100
        self.data = bytearray(self.n * 2)
        self.pcm = np.frombuffer(self.data, dtype=np.int16)
        self.frame = rtc.AudioFrame(self.data, sample_rate, 1, self.n)

    def load(self, x: np.ndarray) -> None:
        np.multiply(np.clip(x, -1.0, 1.0), 32767.0, out=x)  # x is our scratch copy
        self.pcm[:] = np.rint(x)

    def store(self, out: np.ndarray) -> None:
        np.multiply(self.pcm, 1.0 / 32768.0, out=out)


class EchoCanceller:
    """WebRTC echo cancellation (AEC3) with the played audio as the far-end reference.

    Call `far_end(frame)` with each frame as it is queued for playback and `process(mic)` with
    each captured frame, in the order they happen; both take float32 mono at `sample_rate`
    whose length is a multiple of 10 ms. `delay_ms` is the hint WebRTC wants on every near-end
    frame (playback queue + device latencies); AEC3 also estimates the delay itself, so a rough
    value is enough. Adapting takes a few hundred ms of far-end speech after the start.
    """

    def __init__(self, sample_rate: int = SAMPLE_RATE, noise_suppression: bool = True,
                 high_pass_filter: bool = True, delay_ms: int = 0) -> None:
        try:
            from livekit import rtc
        except (ImportError, OSError) as e:  # OSError: its bundled native library failed to load
            raise DeviceError(
                "Echo cancellation needs the livekit package: pip install livekit "
                "(or turn echo cancellation off in Settings when using a headset)"
            ) from e
        if sample_rate % 100:
            raise ValueError(f"sample_rate must be a multiple of 100 Hz, got {sample_rate}")
        self.sample_rate = sample_rate
        self.delay_ms = delay_ms
        self._apm = rtc.AudioProcessingModule(
            echo_cancellation=True, noise_suppression=noise_suppression, high_pass_filter=high_pass_filter
        )
        self._far = _Frame10ms(rtc, sample_rate)
        self._near = _Frame10ms(rtc, sample_rate)
        self._sub = sample_rate // 100

    def _sub_frames(self, frame: np.ndarray) -> np.ndarray:
        x = np.array(frame, dtype=np.float32).reshape(-1)  # a private copy (scratch for scaling)
        if len(x) % self._sub:
            raise ValueError(f"frames must be a multiple of 10 ms ({self._sub} samples), got {len(x)}")
        return x

    def far_end(self, frame: np.ndarray) -> None:
        x = self._sub_frames(frame)
        for i in range(0, len(x), self._sub):
            self._far.load(x[i : i + self._sub])
            self._apm.process_reverse_stream(self._far.frame)

    def process(self, mic_frame: np.ndarray) -> np.ndarray:
        x = self._sub_frames(mic_frame)
        out = np.empty_like(x)
        for i in range(0, len(x), self._sub):
            self._near.load(x[i : i + self._sub])
            self._apm.set_stream_delay_ms(self.delay_ms)  # WebRTC expects it before every frame
            self._apm.process_stream(self._near.frame)
            self._near.store(out[i : i + self._sub])
        return out
