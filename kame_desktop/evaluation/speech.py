"""The questions, spoken: Piper (the shipped voice) or espeak-ng, 24 kHz, cached by text + voice."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from kame_desktop.errors import KameError

VOICES = ("piper", "espeak-ng")


def speech_cache() -> Path:
    from kame_desktop.models.embedded import cache_root

    return cache_root() / "eval" / "speech"


class Speaker:
    """Speaks question text; `tts` may be the lite front-end's PiperTts (loaded once)."""

    def __init__(self, voice: str = "piper", tts=None, cache: Path | None = None) -> None:
        if voice not in VOICES:
            raise KameError(f"--voice must be one of {', '.join(VOICES)}")
        self.voice = voice
        self._tts = tts
        self._cache = cache or speech_cache()

    def _synthesizer(self) -> Callable[[str], np.ndarray]:
        if self.voice == "espeak-ng":
            from kame_desktop.bench.speech import speak

            return speak
        if self._tts is None:
            from kame_desktop.frontend.lite.tts import PiperTts

            self._tts = PiperTts(threads=1)
        return self._tts.synthesize

    def speak(self, text: str) -> np.ndarray:
        from kame_desktop.audio.files import read_audio, write_wav

        key = hashlib.sha256(f"{self.voice}\n{text}".encode()).hexdigest()[:20]
        path = self._cache / f"{key}.wav"
        if path.is_file():
            return read_audio(path)
        pcm = self._synthesizer()(text)
        if not len(pcm):
            raise KameError(f"the {self.voice} voice made no sound for {text!r}")
        self._cache.mkdir(parents=True, exist_ok=True)
        write_wav(path, pcm)  # atomic: a crash never leaves a truncated cache entry
        return read_audio(path)  # the cached 16-bit form, so a cache hit plays the same samples
