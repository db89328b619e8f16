"""Semantic end of turn with Smart Turn v3.2 (the ONNX model that ships in the `pipecat-ai` wheel).

The model reads the last 8 s of the user's audio at 16 kHz (shorter audio is padded with zeros in
front) as Whisper log-mel features and answers the probability that the turn is complete. It is
run directly with onnxruntime: pipecat's own analyzer would pull in loguru, numba and Pillow, so
pipecat-ai is installed without its dependencies and only its model file is read. The features
are faster-whisper's `FeatureExtractor` on the waveform normalized to zero mean and unit variance
(what the model was trained with, Whisper's `do_normalize`).

The model is given the speech without its trailing silence (cut after the last 20 ms window
within `SPEECH_DB` of the loudest): with silence after it, it calls unfinished sentences
finished. On 16 Piper-spoken questions cut before their last word, it called 11 of 16
unfinished with the silence trimmed, 1 of 16 with the 0.1–0.2 s of silence the VAD has heard
by then.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from kame_desktop.errors import ModelFileError

SAMPLE_RATE = 16_000
WINDOW_S = 8  # the model's fixed input: 8 s, 800 mel frames
SPEECH_DB = -45.0  # quieter than this below the loudest 20 ms is trailing silence
_WIN = SAMPLE_RATE // 50
_MODEL = Path("audio") / "turn" / "smart_turn" / "data" / "smart-turn-v3.2-cpu.onnx"


def smart_turn_model_path() -> Path:
    # find_spec on the top-level package finds its folder without importing pipecat.
    spec = importlib.util.find_spec("pipecat")
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileError("Smart Turn needs pipecat-ai's model file: pip install --no-deps pipecat-ai==1.14.0")
    path = Path(next(iter(spec.submodule_search_locations))) / _MODEL
    if not path.is_file():
        raise ModelFileError(
            f"Smart Turn's model is missing ({path}); reinstall it: pip install --no-deps --force-reinstall pipecat-ai==1.14.0"
        )
    return path


def trim_trailing_silence(pcm16k: np.ndarray) -> np.ndarray:
    """`pcm16k` up to the end of its last window within `SPEECH_DB` of the loudest."""
    n = len(pcm16k) // _WIN
    if not n:
        return pcm16k
    rms = np.sqrt(np.mean(pcm16k[: n * _WIN].reshape(n, _WIN) ** 2, axis=1))
    loud = np.flatnonzero(rms > rms.max() * 10 ** (SPEECH_DB / 20))
    return pcm16k[: (loud[-1] + 1) * _WIN] if len(loud) else pcm16k


class SmartTurn:
    """`probability(pcm16k)`: how likely the user's turn is over, given its audio so far."""

    def __init__(self, threads: int = 1) -> None:
        import onnxruntime
        from faster_whisper.feature_extractor import FeatureExtractor

        opts = onnxruntime.SessionOptions()
        # One thread: on 2 cores busy with Whisper and llama.cpp, a second one only waits for a
        # core (measured: 1 thread 115-160 ms a run, 2 threads 145-230 ms).
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        path = smart_turn_model_path()
        try:
            self._session = onnxruntime.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own types for a damaged file
            raise ModelFileError(f"cannot load Smart Turn's model: {e}; reinstall pipecat-ai==1.14.0") from e
        self._features = FeatureExtractor(feature_size=80, sampling_rate=SAMPLE_RATE, chunk_length=WINDOW_S)
        self.probability(np.zeros(SAMPLE_RATE, np.float32))  # the first run is ~2x slower: not at the first turn

    def probability(self, pcm16k: np.ndarray) -> float:
        n = WINDOW_S * SAMPLE_RATE
        x = trim_trailing_silence(np.asarray(pcm16k, dtype=np.float32).reshape(-1))[-n:]
        x = np.pad(x, (n - len(x), 0))
        x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
        features = self._features(x, padding=0)[None]  # (1, 80, 800)
        (out,) = self._session.run(None, {"input_features": features})
        return float(out.reshape(-1)[0])
