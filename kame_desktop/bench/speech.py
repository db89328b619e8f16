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
# Longer spoken requests (4–6 s), the kind a cloud LLM is asked for: the partials re-ask several
# times before the user stops, which short questions hardly do (`bench oracle-lag`).
REQUESTS = (
    "I am planning a trip to Japan in the spring, what are three places I should not miss?",
    "Can you explain in simple words how a vaccine teaches the body to fight a virus?",
    "My tomato plants have yellow leaves at the bottom, what could be wrong and what should I do?",
    "I have chicken, rice, an onion and some spinach, what could I cook for dinner tonight?",
    "What is the difference between weather and climate, and why do people mix them up?",
    "Could you help me write a short birthday message for my grandmother who is turning ninety?",
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
