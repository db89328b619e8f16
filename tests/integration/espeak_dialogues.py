"""Short two-speaker dialogues spoken by espeak-ng with exact word times: each word is
synthesised on its own and placed on the timeline, so its start and end are known."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ESPEAK_RATE = 22_050
DIALOGUES: dict[str, list[tuple[str, str]]] = {
    "weather": [("A", "hello how are you today"), ("B", "i am fine thank you"),
                ("A", "what is the weather like"), ("B", "it looks like rain")],
    "capital": [("A", "what is the capital of france"), ("B", "the capital of france is paris")],
    "sister": [("A", "please remind me to call my sister"), ("B", "sure i will remind you tomorrow")],
}
VOICES = {"A": ["-v", "en-us", "-p", "40"], "B": ["-v", "en-gb", "-p", "65"]}
WORD_GAP_S, TURN_GAP_S, LEAD_S = 0.1, 0.7, 0.3


@dataclass(frozen=True)
class SpokenDialogue:
    id: str
    stereo: np.ndarray  # [samples, 2] float32 at ESPEAK_RATE
    words: list[dict]  # canonical word records (exact times)


def _speak(word: str, voice: list[str]) -> np.ndarray:
    import io

    import soundfile as sf

    wav = subprocess.run(["espeak-ng", *voice, "-s", "170", "--stdout", word], check=True, capture_output=True).stdout
    pcm, rate = sf.read(io.BytesIO(wav), dtype="float32")
    assert rate == ESPEAK_RATE
    loud = np.flatnonzero(np.abs(pcm) > 0.02)
    return pcm[loud[0] : loud[-1] + 1]


def speak_dialogue(dialogue: str, turns: list[tuple[str, str]]) -> SpokenDialogue:
    clips: list[tuple[int, float, np.ndarray]] = []
    words: list[dict] = []
    t = LEAD_S
    for speaker, text in turns:
        for word in text.split():
            pcm = _speak(word, VOICES[speaker])
            end = t + len(pcm) / ESPEAK_RATE
            clips.append((0 if speaker == "A" else 1, t, pcm))
            words.append({"speaker": speaker, "word": word, "start": round(t, 3), "end": round(end, 3)})
            t = end + WORD_GAP_S
        t += TURN_GAP_S - WORD_GAP_S
    stereo = np.zeros((int((t + 0.5) * ESPEAK_RATE), 2), dtype=np.float32)
    for channel, start, pcm in clips:
        i = int(round(start * ESPEAK_RATE))
        stereo[i : i + len(pcm), channel] = pcm
    return SpokenDialogue(dialogue, stereo, words)


def write_canonical(root: Path, dialogues: list[SpokenDialogue]) -> Path:
    import soundfile as sf

    (root / "audio").mkdir(parents=True, exist_ok=True)
    (root / "text").mkdir(parents=True, exist_ok=True)
    for d in dialogues:
        sf.write(root / "audio" / f"{d.id}.wav", d.stereo, ESPEAK_RATE, subtype="PCM_16")
        (root / "text" / f"{d.id}.json").write_text(json.dumps(d.words))
    return root


def write_bare(root: Path, dialogues: list[SpokenDialogue]) -> Path:
    """Two-channel WAVs, except the last dialogue as a per-speaker pair."""
    import soundfile as sf

    root.mkdir(parents=True, exist_ok=True)
    for i, d in enumerate(dialogues):
        if i == len(dialogues) - 1:
            sf.write(root / f"{d.id}_A.wav", d.stereo[:, 0], ESPEAK_RATE, subtype="PCM_16")
            sf.write(root / f"{d.id}_B.wav", d.stereo[:, 1], ESPEAK_RATE, subtype="PCM_16")
        else:
            sf.write(root / f"{d.id}.wav", d.stereo, ESPEAK_RATE, subtype="PCM_16")
    return root
