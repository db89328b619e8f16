"""The sound card: sounddevice input and output streams behind the AudioSource/AudioSink interface.

`DuplexAudio.read()` returns 1920-sample float32 frames at 24 kHz (80 ms) as the microphone
delivers them and `write(frame)` queues frames for the speakers. Rules, from the design:

- The PortAudio callbacks only copy into / out of preallocated `SpscRing`s (no locks, no
  logging, no resampling). Resampling (soxr, when a device cannot run at 24 kHz), framing, echo
  cancellation, gating and meters happen in `read()` / `write()`, on the caller's thread.
- Input and output are separate streams so two devices (USB mic, Bluetooth speaker) work. Their
  clocks drift apart; the output queue absorbs it: when it runs dry a little silence is queued
  ahead of the next frame (an underrun, counted), and when it grows past a bound the excess is
  dropped (counted).
- A consumer slower than real time never builds lag: beyond `max_input_backlog` frames waiting,
  the oldest input frames are dropped (`dropped_input_frames`) and `input_lag_s` shows the lag.
- Device trouble (no PortAudio, no microphone, a device unplugged or stalled) never stops the
  session: the message goes to `on_error` (the GUI's banner), `status` says it, `read()` keeps
  returning silence paced by a timer, and `reopen()` (the GUI calls it when devices change, and
  `read()` itself every `retry_interval` seconds) brings the device back.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kame_desktop.audio.aec import EchoCanceller, EchoCancellerLike
from kame_desktop.audio.ring import SpscRing
from kame_desktop.errors import DeviceError
from kame_desktop.events import FRAME_SECONDS, FRAME_SIZE, SAMPLE_RATE

log = logging.getLogger(__name__)

DeviceSpec = int | str | None  # PortAudio index, (part of) a device name, or None: the default

NO_MIC = "No microphone found — plug one in or pick another in Settings"
NO_SPEAKER = "No speaker found — plug one in or pick another in Settings"
MIC_STALLED = "The microphone stopped sending audio (unplugged?) — plug it back in or pick another in Settings"
SPEAKER_STOPPED = "The speaker stopped playing (unplugged?) — plug it back in or pick another in Settings"
MIC_DENIED = ("The system denied access to the microphone — allow kame-desktop to use it in the privacy settings "
              "(macOS: System Settings → Privacy & Security → Microphone), then restart the app")
_SILENCE_DB = -100.0  # meter floor


def _is_denied(e: Exception) -> bool:
    """Whether PortAudio says the OS refused the device (not that it is missing or busy)."""
    text = str(e).lower()
    return any(word in text for word in ("permission denied", "not permitted", "not authorized", "access denied"))


def import_sounddevice() -> Any:
    """sounddevice, or a DeviceError saying what to install (its import raises OSError when the
    PortAudio library is missing)."""
    try:
        import sounddevice
    except OSError as e:
        raise DeviceError("PortAudio is not installed: sudo apt-get install libportaudio2") from e
    except ImportError as e:
        raise DeviceError("The sounddevice package is missing: pip install sounddevice") from e
    return sounddevice


# --- device listing ------------------------------------------------------------------------------


@dataclass(frozen=True)
class AudioDevice:
    index: int
    name: str
    hostapi: str
    max_input_channels: int
    max_output_channels: int
    default_samplerate: float
    default_input: bool = False
    default_output: bool = False

    @property
    def is_input(self) -> bool:
        return self.max_input_channels > 0

    @property
    def is_output(self) -> bool:
        return self.max_output_channels > 0


def list_devices() -> list[AudioDevice]:
    """Every PortAudio device, with the system defaults marked (for Settings and `doctor`)."""
    sd = import_sounddevice()
    default_in, default_out = sd.default.device
    apis = [api["name"] for api in sd.query_hostapis()]
    return [
        AudioDevice(
            index=d["index"], name=d["name"], hostapi=apis[d["hostapi"]],
            max_input_channels=d["max_input_channels"], max_output_channels=d["max_output_channels"],
            default_samplerate=d["default_samplerate"],
            default_input=d["index"] == default_in, default_output=d["index"] == default_out,
        )
        for d in sd.query_devices()
    ]


def resolve_device(spec: DeviceSpec, kind: str) -> AudioDevice:
    """The device for `spec` ("input" or "output"): None → the system default, an int → that
    index, a str → the device with that exact name, else the only one whose name contains it
    (case-insensitive). Raises DeviceError with the available names otherwise."""
    devices = [d for d in list_devices() if (d.is_input if kind == "input" else d.is_output)]
    what = "Microphone" if kind == "input" else "Speaker"
    names = ", ".join(repr(d.name) for d in devices) or "none"
    if not devices:
        raise DeviceError(NO_MIC if kind == "input" else NO_SPEAKER)
    if spec is None:
        found = [d for d in devices if (d.default_input if kind == "input" else d.default_output)]
        return found[0] if found else devices[0]  # no default set: the first one is as good
    if isinstance(spec, int):
        found = [d for d in devices if d.index == spec]
    else:
        found = [d for d in devices if d.name == spec] or [d for d in devices if spec.lower() in d.name.lower()]
    if len(found) == 1:
        return found[0]
    if not found:
        raise DeviceError(f"{what} {spec!r} not found — plug it in or pick another in Settings (available: {names})")
    raise DeviceError(f"{what} {spec!r} matches several devices — pick one in Settings (available: {names})")


def usable_device(spec: DeviceSpec, kind: str, rate: int = SAMPLE_RATE) -> tuple[AudioDevice, int]:
    """The device a session would open for `spec` and the rate it would run at (for `doctor`);
    DeviceError when there is none."""
    device = resolve_device(spec, kind)
    channels = 1 if kind == "input" else min(2, device.max_output_channels)  # as the session opens it
    return device, _supported_rate(import_sounddevice(), device, kind, channels, rate)


def _supported_rate(sd: Any, device: AudioDevice, kind: str, channels: int, rate: int) -> int:
    """`rate` when the device takes it, else its own default rate (we resample to/from it)."""
    check = sd.check_input_settings if kind == "input" else sd.check_output_settings
    for candidate in (rate, int(device.default_samplerate)):
        try:
            check(device=device.index, channels=channels, dtype="float32", samplerate=candidate)
            return candidate
        except Exception:  # PortAudioError / ValueError: try the next rate
            continue
    raise DeviceError(f"'{device.name}' accepts neither {rate} Hz nor its default rate — pick another device in Settings")


def _rescan(sd: Any) -> None:
    """Make PortAudio list the devices again (it lists them once, at initialisation): the
    documented way is to terminate and initialise it again, with no stream of ours open. Other
    streams of this process would be closed by it too: DuplexAudio is the only one."""
    if sd._initialized > 0:  # a failed initialisation last time left it terminated
        sd._terminate()
    sd._initialize()


def dbfs(frame: np.ndarray) -> float:
    rms = float(np.sqrt(np.mean(np.square(frame, dtype=np.float32)))) if len(frame) else 0.0
    return max(_SILENCE_DB, 20.0 * math.log10(rms)) if rms > 0 else _SILENCE_DB


@dataclass(frozen=True)
class Levels:
    input_db: float = _SILENCE_DB
    output_db: float = _SILENCE_DB


# --- the streams -----------------------------------------------------------------------------------


@dataclass
class _Streams:
    """One opening of the devices: the PortAudio streams, their rings and the reader's and
    writer's per-stream state. `reopen()` swaps the whole object, so a reader or writer holding
    the old one never mixes state of two openings."""

    input_device: AudioDevice
    output_device: AudioDevice
    in_rate: int
    out_rate: int
    in_ring: SpscRing
    out_ring: SpscRing
    in_stream: Any = None
    out_stream: Any = None
    in_resampler: Any = None  # soxr.ResampleStream when in_rate != 24 kHz
    out_resampler: Any = None
    pending: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # 24 kHz, < frames
    scratch_in: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    finished: bool = False  # set by PortAudio's finished callback (a stream stopped by itself)
    last_data: float = 0.0  # monotonic time input last arrived


class DuplexAudio:
    """Microphone in, speakers out, at 24 kHz in 80 ms frames (AudioSource and AudioSink).

    `blocksize`: samples per PortAudio callback at 24 kHz (480 = 20 ms; lower is less latency,
    more wake-ups). `strict`: raise DeviceError when the devices cannot be opened now (the CLI)
    instead of running on timer-paced silence until they can (the GUI). `echo_canceller`: applied
    to the microphone, fed with what is played. (Push-to-talk and mute gate its frames above it:
    the controller's MicGate.)
    """

    def __init__(
        self,
        input_device: DeviceSpec = None,
        output_device: DeviceSpec = None,
        sample_rate: int = SAMPLE_RATE,
        blocksize: int = 480,
        *,
        echo_canceller: EchoCancellerLike | None = None,
        on_error: Callable[[str], None] | None = None,
        on_recover: Callable[[], None] | None = None,
        max_input_backlog: int = 4,  # frames; 320 ms of lag at most
        max_output_backlog: int = 4,  # frames queued for the speakers at most
        output_prefill: int = FRAME_SIZE // 2,  # silence queued when the output runs dry (jitter room)
        stall_timeout: float = 1.0,  # seconds without microphone data → the device is gone
        retry_interval: float | None = 5.0,  # seconds between automatic reopen() tries; None: never
        strict: bool = False,
    ) -> None:
        self.input_spec, self.output_spec = input_device, output_device
        self.sample_rate = sample_rate
        self.frame_size = FRAME_SIZE * sample_rate // SAMPLE_RATE
        self.blocksize = blocksize
        self.echo_canceller = echo_canceller
        self.on_error, self.on_recover = on_error, on_recover
        self.max_input_backlog = max_input_backlog
        self.max_output_backlog = max_output_backlog
        self.output_prefill = output_prefill
        self.stall_timeout = stall_timeout
        self.retry_interval = retry_interval
        # Counters (callbacks increment some of them: plain int attribute updates).
        self.dropped_input_frames = 0  # stale frames dropped because the consumer fell behind
        self.input_overflows = 0  # samples lost because the input ring was full
        self.output_underruns = 0  # callbacks that found too little queued (played silence)
        self.dropped_output_samples = 0  # queued output dropped to keep the output latency bounded
        self.frames_read = 0
        self.frames_written = 0
        self.input_lag_s = 0.0  # age of the newest frame returned by read(): what the GUI shows as lag
        self._levels = Levels()
        self._streams: _Streams | None = None
        self._error: str | None = None
        self._closed = False
        self._writing = False  # output underruns count once the session writes
        self._open_lock = threading.Lock()  # serialises reopen()/close(); never taken by callbacks
        self._silence_due = 0.0  # when the next timer-paced silence frame is due
        self._next_retry = 0.0
        self._sd: Any = None
        try:
            self._streams = self._open()
        except DeviceError as e:
            if strict:
                raise
            self._fail(str(e))

    # --- public state ----------------------------------------------------------------------------

    @property
    def status(self) -> str:
        """"ok", "closed", or the message of the current device error."""
        return "closed" if self._closed else (self._error or "ok")

    @property
    def error(self) -> str | None:
        return self._error

    @property
    def levels(self) -> Levels:
        """RMS in dBFS of the last frame read (after echo cancellation, before gating) and of the
        last frame written."""
        return self._levels

    @property
    def device_names(self) -> tuple[str, str] | None:
        s = self._streams
        return (s.input_device.name, s.output_device.name) if s else None

    @property
    def device_rates(self) -> tuple[int, int] | None:
        """The rates the devices run at (24 kHz unless they cannot: then soxr resamples)."""
        s = self._streams
        return (s.in_rate, s.out_rate) if s else None

    # --- opening and closing ---------------------------------------------------------------------

    def _open(self) -> _Streams:
        sd = self._sd = import_sounddevice()
        import soxr

        indev, in_rate = usable_device(self.input_spec, "input", self.sample_rate)
        outdev, out_rate = usable_device(self.output_spec, "output", self.sample_rate)
        out_channels = min(2, outdev.max_output_channels)  # mono copied to both sides of a stereo device
        # The input ring holds 3 s: a reader stalled for less (a model warming up) finds the
        # newest audio there and drops the stale part itself; beyond that the callback loses
        # the newest samples (counted) until the reader is back.
        in_capacity = max(3 * self.sample_rate, self.frame_size * (self.max_input_backlog + 2))
        s = _Streams(
            indev, outdev, in_rate, out_rate,
            in_ring=SpscRing(math.ceil(in_capacity * in_rate / self.sample_rate)),
            out_ring=SpscRing(math.ceil(self.frame_size * (self.max_output_backlog + 2) * out_rate / self.sample_rate)),
        )
        if in_rate != self.sample_rate:
            s.in_resampler = soxr.ResampleStream(in_rate, self.sample_rate, 1, dtype="float32")
        if out_rate != self.sample_rate:
            s.out_resampler = soxr.ResampleStream(self.sample_rate, out_rate, 1, dtype="float32")
        s.scratch_in = np.zeros(s.in_ring.capacity, np.float32)
        in_block = round(self.blocksize * in_rate / self.sample_rate)
        out_block = round(self.blocksize * out_rate / self.sample_rate)
        out_scratch = np.zeros(out_block * 4, np.float32)  # PortAudio may ask for more than blocksize
        in_ring, out_ring = s.in_ring, s.out_ring

        def on_input(indata: np.ndarray, frames: int, _time: Any, _status: Any) -> None:
            # Audio thread: copy only. Overflow flags are counted through the ring's shortfall.
            written = in_ring.write(indata[:, 0])
            if written < frames:
                self.input_overflows += frames - written

        def on_output(outdata: np.ndarray, frames: int, _time: Any, _status: Any) -> None:
            if frames > len(out_scratch):
                outdata.fill(0)
                return
            got = out_ring.read_into(out_scratch[:frames])
            if got < frames:
                out_scratch[got:frames] = 0.0
                if self._writing:
                    self.output_underruns += 1
            outdata[:] = out_scratch[:frames, None]

        def on_finished() -> None:
            s.finished = True  # a flag only: read() turns it into an error

        try:
            s.in_stream = sd.InputStream(
                device=indev.index, samplerate=in_rate, channels=1, dtype="float32", blocksize=in_block,
                latency="low", callback=on_input, finished_callback=on_finished,
            )
            s.out_stream = sd.OutputStream(
                device=outdev.index, samplerate=out_rate, channels=out_channels, dtype="float32",
                blocksize=out_block, latency="low", callback=on_output, finished_callback=on_finished,
            )
            s.last_data = time.monotonic()
            s.in_stream.start()
            s.out_stream.start()
        except Exception as e:  # sd.PortAudioError, or ValueError for bad settings
            self._close_streams(s)
            if _is_denied(e):
                raise DeviceError(MIC_DENIED) from e
            raise DeviceError(
                f"Could not open '{indev.name}' / '{outdev.name}' ({e}) — plug the device back in or pick another in Settings"
            ) from e
        if isinstance(self.echo_canceller, EchoCanceller):
            # WebRTC's delay hint: playback queue + device latencies + half a frame of framing.
            lat = s.in_stream.latency + s.out_stream.latency
            self.echo_canceller.delay_ms = round(1000 * (lat + (self.output_prefill + self.frame_size / 2) / self.sample_rate))
        log.info("audio open: in '%s' @ %d Hz, out '%s' @ %d Hz", indev.name, in_rate, outdev.name, out_rate)
        return s

    @staticmethod
    def _close_streams(s: _Streams) -> None:
        for stream in (s.in_stream, s.out_stream):
            if stream is None:
                continue
            try:
                stream.abort()  # abort, not stop: stop drains the output queue first (slow)
                stream.close()
            except Exception as e:  # a vanished device can fail to close: nothing left to do
                log.debug("closing a stream failed: %s", e)

    def reopen(self, rescan: bool = True) -> bool:
        """Close and open the devices again (after a device change or an error); `rescan`
        re-initialises PortAudio so it sees devices plugged in since. Returns whether audio is
        live now. Safe to call from any thread; `on_error` / `on_recover` run on the caller's."""
        failure: str | None = None
        with self._open_lock:
            if self._closed:
                return False
            old, self._streams = self._streams, None
            if old is not None:
                self._close_streams(old)
            try:
                if rescan and self._sd is not None:
                    _rescan(self._sd)
                self._streams = self._open()
            except DeviceError as e:
                failure = str(e)
            except Exception as e:  # PortAudio itself failed to (re)initialise
                failure = f"The audio system failed ({e}) — check the sound settings, then pick a device in Settings"
            recovered = failure is None and self._error is not None
            if recovered:
                self._error = None
        if failure is not None:
            self._fail(failure)  # outside the lock: the callbacks may call reopen() again
            return False
        if recovered:
            log.info("audio recovered")
            if self.on_recover:
                self.on_recover()
        return True

    def close(self) -> None:
        """Stop the streams; a blocked read() returns None within a few ms."""
        self._closed = True
        with self._open_lock:
            s, self._streams = self._streams, None
            if s is not None:
                self._close_streams(s)

    def __enter__(self) -> DuplexAudio:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- errors ---------------------------------------------------------------------------------

    def _fail(self, message: str) -> None:
        """Enter the error state: timer-paced silence from now on, until reopen() succeeds."""
        first = self._error != message
        if self._error is None:
            self._silence_due = time.monotonic()
        self._error = message
        self._next_retry = time.monotonic() + (self.retry_interval or 0.0)
        if first:
            log.warning("audio device error: %s", message)
            if self.on_error:
                self.on_error(message)

    def _check_stream(self, s: _Streams) -> None:
        """Turn a stream that stopped by itself, or a microphone that went quiet for good, into
        the error state."""
        message = None
        with self._open_lock:  # reopen()/close() must not free the streams under our feet
            if self._closed or self._error is not None or s is not self._streams:
                return
            if s.finished or not s.in_stream.active:
                message = MIC_STALLED
            elif not s.out_stream.active:
                message = SPEAKER_STOPPED
            elif time.monotonic() - s.last_data > self.stall_timeout:
                message = MIC_STALLED
        if message:
            self._fail(message)  # outside the lock: on_error may call reopen()

    # --- AudioSource ------------------------------------------------------------------------------

    def read(self) -> np.ndarray | None:
        """The next 80 ms of microphone (after echo cancellation), silence while gated or muted;
        None once closed. Blocks until the frame is there (paced by the device, or by a timer
        while the device is in error)."""
        while not self._closed:
            s = self._streams
            if self._error is not None or s is None:
                frame = self._paced_silence()
                if frame is None:
                    return None
                if self.retry_interval is not None and time.monotonic() >= self._next_retry:
                    self.reopen()
                return self._deliver(frame, live=False)
            frame = self._take_frame(s)
            if frame is not None:
                return self._deliver(frame, live=True)
            self._check_stream(s)
            if self._error is None:
                time.sleep(self._wait_time(s))
        return None

    def _take_frame(self, s: _Streams) -> np.ndarray | None:
        """One frame from the ring (via soxr when needed), dropping stale ones; None if not yet."""
        ratio = self.sample_rate / s.in_rate
        if s.in_ring.available() > 0:
            s.last_data = time.monotonic()
        # Stale input: keep at most max_input_backlog frames waiting behind the one returned.
        waiting = len(s.pending) + s.in_ring.available() * ratio
        excess = int(waiting // self.frame_size) - 1 - self.max_input_backlog
        if excess > 0:
            self.dropped_input_frames += excess
            drop = excess * self.frame_size
            from_pending = min(drop, len(s.pending))
            s.pending = s.pending[from_pending:]
            s.in_ring.skip(round((drop - from_pending) / ratio))
        n = s.in_ring.read_into(s.scratch_in)
        if n:
            x = s.scratch_in[:n]
            x = s.in_resampler.resample_chunk(x) if s.in_resampler is not None else x.copy()
            s.pending = np.concatenate([s.pending, x]) if len(s.pending) else x
        if len(s.pending) < self.frame_size:
            return None
        frame, s.pending = s.pending[: self.frame_size], s.pending[self.frame_size :]
        self.input_lag_s = (len(s.pending) + s.in_ring.available() * ratio) / self.sample_rate
        return frame

    def _wait_time(self, s: _Streams) -> float:
        # Sleep about until the frame is complete, but wake often enough to notice close().
        missing = (self.frame_size - len(s.pending)) / self.sample_rate
        return min(max(missing, 0.002), 0.02)

    def _paced_silence(self) -> np.ndarray | None:
        now = time.monotonic()
        if now - self._silence_due > self.max_input_backlog * FRAME_SECONDS:
            self._silence_due = now  # far behind (a slow consumer): restart the clock, no burst
        while (delay := self._silence_due - time.monotonic()) > 0:
            if self._closed:
                return None
            time.sleep(min(delay, 0.02))
        self._silence_due += self.frame_size / self.sample_rate
        return np.zeros(self.frame_size, np.float32)

    def _deliver(self, frame: np.ndarray, live: bool) -> np.ndarray:
        if live and self.echo_canceller is not None:
            frame = self.echo_canceller.process(frame)
        self._levels = Levels(dbfs(frame), self._levels.output_db)
        self.frames_read += 1
        return np.asarray(frame, np.float32)

    # --- AudioSink --------------------------------------------------------------------------------

    def write(self, frame: np.ndarray) -> None:
        """Queue one frame (24 kHz float32) for the speakers; dropped while the device is in
        error or closed."""
        x = np.asarray(frame, np.float32).reshape(-1)
        self._levels = Levels(self._levels.input_db, dbfs(x))
        self.frames_written += 1
        s = self._streams
        if self._closed or self._error is not None or s is None:
            return
        if self.echo_canceller is not None:
            self.echo_canceller.far_end(x)
        if s.out_resampler is not None:
            x = s.out_resampler.resample_chunk(x)
        ring, ratio = s.out_ring, s.out_rate / self.sample_rate
        if ring.available() < self.blocksize * ratio:
            # Running dry (start, jitter, a faster output clock): queue some silence first so the
            # next frames arrive before the device needs them.
            ring.write(np.zeros(round(self.output_prefill * ratio), np.float32))
        limit = round(self.max_output_backlog * self.frame_size * ratio)
        excess = ring.available() + len(x) - limit
        if excess > 0:  # a slower output clock: drop the oldest of what we were about to queue
            self.dropped_output_samples += excess
            x = x[excess:]
        ring.write(x)
        self._writing = True
