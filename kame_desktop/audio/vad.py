"""Streaming voice activity detection with Silero VAD (v6, the ONNX model faster-whisper ships
under `faster_whisper/assets/`).

The model is run directly with onnxruntime and numpy: the `silero-vad` package would add a hard
torch requirement, which the lite set does not otherwise need. The start/end state machine is the
one of silero's `VADIterator`; `min_silence_ms` is the end-of-turn hang-over (how long the user
must be silent before the turn counts as over).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from kame_desktop.errors import ModelFileError

SAMPLE_RATE = 16_000
CHUNK = 512  # samples per model call at 16 kHz (32 ms)
_CONTEXT = 64  # samples of the previous chunk the model sees before each chunk
TURN_HANGOVER_MS = 500  # silence that ends the user's turn

VadEvent = tuple[Literal["start", "end"], float]  # (kind, seconds on the VAD's sample clock)


def silero_model_path() -> Path:
    # find_spec on the top-level package finds its folder without importing it.
    spec = importlib.util.find_spec("faster_whisper")
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileError("faster-whisper (which ships Silero VAD) is not installed: pip install faster-whisper")
    path = Path(next(iter(spec.submodule_search_locations))) / "assets" / "silero_vad_v6.onnx"
    if not path.is_file():
        raise ModelFileError(f"Silero VAD's model is missing ({path}); reinstall it: pip install --force-reinstall faster-whisper")
    return path


@dataclass
class _VadState:
    """Everything that changes while streaming, reset in one place."""

    h: np.ndarray = field(default_factory=lambda: np.zeros((1, 1, 128), np.float32))  # LSTM state
    c: np.ndarray = field(default_factory=lambda: np.zeros((1, 1, 128), np.float32))
    context: np.ndarray = field(default_factory=lambda: np.zeros(_CONTEXT, np.float32))
    pending: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # < one chunk
    samples: int = 0  # samples run through the model so far
    triggered: bool = False
    temp_end: int = 0  # sample where the current silence began (0: none)


class SileroVad:
    """`process(pcm16k)` returns the speech starts and ends found in this chunk, in order, as
    times in seconds since the last `reset()`; audio shorter than a model chunk is carried over."""

    def __init__(self, threshold: float = 0.5, min_silence_ms: int = TURN_HANGOVER_MS, speech_pad_ms: int = 30) -> None:
        import onnxruntime

        opts = onnxruntime.SessionOptions()
        opts.inter_op_num_threads = 1  # 0.5 ms per chunk: threads would cost more than they save
        opts.intra_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(
            str(silero_model_path()), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        self.threshold = threshold
        self.min_silence = SAMPLE_RATE * min_silence_ms // 1000
        self.speech_pad = SAMPLE_RATE * speech_pad_ms // 1000
        self.state = _VadState()

    def reset(self) -> None:
        self.state = _VadState()

    @property
    def in_speech(self) -> bool:
        return self.state.triggered

    @property
    def silence_samples(self) -> int:
        """How long the speech in progress has been silent (0: speaking, or not in speech)."""
        s = self.state
        return s.samples - s.temp_end + CHUNK if s.triggered and s.temp_end else 0

    @property
    def received(self) -> int:
        """Samples given to `process` since `reset()` (run through the model, or waiting for a
        whole chunk): the clock `silence_start` is on, up to now."""
        return self.state.samples + len(self.state.pending)

    @property
    def silence_start(self) -> int | None:
        """Where the pause in the speech in progress began, in samples since `reset()` (None:
        speaking, or not in speech)."""
        s = self.state
        return s.temp_end - CHUNK if s.triggered and s.temp_end else None

    def end_speech(self) -> None:
        """The turn was ended by someone else (the turn detector): what follows starts anew."""
        self.state.triggered = False
        self.state.temp_end = 0

    def probability(self, chunk: np.ndarray) -> float:
        """Speech probability of one 512-sample chunk (advances the model state)."""
        s = self.state
        x = np.concatenate([s.context, chunk])[None, :]
        out, s.h, s.c = self._session.run(None, {"input": x, "h": s.h, "c": s.c})
        s.context = x[0, -_CONTEXT:]
        return float(out.reshape(-1)[0])

    def process(self, pcm16k: np.ndarray) -> list[VadEvent]:
        s = self.state
        audio = np.concatenate([s.pending, np.asarray(pcm16k, dtype=np.float32).reshape(-1)])
        n = len(audio) // CHUNK * CHUNK
        s.pending = audio[n:]
        events: list[VadEvent] = []
        for i in range(0, n, CHUNK):
            p = self.probability(audio[i : i + CHUNK])
            s.samples += CHUNK
            if p >= self.threshold:
                s.temp_end = 0
                if not s.triggered:
                    s.triggered = True
                    events.append(("start", max(0, s.samples - self.speech_pad - CHUNK) / SAMPLE_RATE))
            elif p < self.threshold - 0.15 and s.triggered:  # hysteresis, as in VADIterator
                if not s.temp_end:
                    s.temp_end = s.samples
                if s.samples - s.temp_end >= self.min_silence:
                    end = min(s.temp_end + self.speech_pad - CHUNK, s.samples)
                    events.append(("end", end / SAMPLE_RATE))
                    s.triggered = False
                    s.temp_end = 0
        return events
