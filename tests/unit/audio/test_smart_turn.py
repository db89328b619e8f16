"""Smart Turn v3.2 read from the pipecat-ai wheel: where the model comes from, what it is given."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from kame_desktop.audio import smart_turn
from kame_desktop.audio.smart_turn import SAMPLE_RATE, smart_turn_model_path, trim_trailing_silence
from kame_desktop.errors import ModelFileError


def test_the_model_file_comes_from_the_installed_wheel():
    path = smart_turn_model_path()
    assert path.name == "smart-turn-v3.2-cpu.onnx" and path.stat().st_size > 8_000_000


def test_without_pipecat_it_says_how_to_install_it(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pipecat" else real(name, *a))
    with pytest.raises(ModelFileError, match=r"pip install --no-deps pipecat-ai==1\.14\.0"):
        smart_turn_model_path()


def test_trailing_silence_is_trimmed_to_the_last_loud_window():
    tone = 0.3 * np.sin(np.arange(SAMPLE_RATE) / 5).astype(np.float32)
    quiet = np.full(SAMPLE_RATE // 2, 1e-4, np.float32)  # -70 dBFS room noise
    assert len(trim_trailing_silence(np.concatenate([tone, quiet]))) == len(tone)
    assert len(trim_trailing_silence(np.zeros(100, np.float32))) == 100  # nothing loud: as it was


def test_probability_reads_8_s_and_pads_shorter_audio(monkeypatch):
    model = smart_turn.SmartTurn(threads=1)
    seen = []
    run = model._session.run
    monkeypatch.setattr(model._session, "run", lambda out, feeds: seen.append(feeds["input_features"]) or run(out, feeds))
    speechlike = 0.2 * np.sin(np.arange(3 * SAMPLE_RATE) / 7).astype(np.float32)
    p = model.probability(speechlike)
    assert 0.0 <= p <= 1.0 and seen[0].shape == (1, 80, 800) and seen[0].dtype == np.float32
