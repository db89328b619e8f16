"""Spoken test questions for benchmarks: espeak-ng speech, read back at 24 kHz mono."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from kame_desktop.errors import KameError

QUESTIONS = (
    "What is the capital of France?",
    "How tall is Mount Everest?",
    "Can you tell me a short story about a turtle?",
    "What is the boiling point of water at sea level?",
    "Who wrote the play Romeo and Juliet?",
    "Why is the sky blue during the day?",
    "How many legs does a spider have?",
    "What is the largest planet in our solar system?",
    "Could you recommend a good book for a long flight?",
    "What should I cook for dinner tonight?",
    "How far away is the moon from the earth?",
    "What is the fastest land animal?",
)


def speak(text: str, speed: int = 160) -> np.ndarray:
    """Synthesize `text` with espeak-ng (en-us) and return float32 mono at 24 kHz."""
    from kame_desktop.audio.files import read_audio

    if shutil.which("espeak-ng") is None:
        raise KameError("espeak-ng is needed for this benchmark: apt-get install espeak-ng")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", str(speed), "-w", str(path), text], check=True)
        return read_audio(path)
