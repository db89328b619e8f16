"""Integration fixtures. (Section owned by the training tests: espeak-ng dialogues, shards.)"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from espeak_dialogues import DIALOGUES, SpokenDialogue, speak_dialogue, write_canonical


@pytest.fixture(scope="session")
def spoken_dialogues() -> list[SpokenDialogue]:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (sudo apt-get install espeak-ng)")
    return [speak_dialogue(d, turns) for d, turns in DIALOGUES.items()]


@pytest.fixture(scope="session")
def canonical_source(spoken_dialogues, tmp_path_factory) -> Path:
    """The dialogues in the canonical layout (read-only: copy before changing)."""
    return write_canonical(tmp_path_factory.mktemp("canonical") / "src", spoken_dialogues)


@pytest.fixture(scope="session")
def tiny_shards(canonical_source, tiny_checkpoint, tmp_path_factory) -> Path:
    """Shards of the espeak-ng dialogues for the tiny checkpoint (random-strategy oracle): the
    finetune tests' input. Returns the dataset folder; shards are under `shards/`."""
    from kame_desktop.training.prepare import prepare
    from kame_desktop.training.simulate_oracle import SimulateSettings, simulate_oracle
    from kame_desktop.training.tokenize import TokenizeSettings, tokenize

    data = tmp_path_factory.mktemp("shards") / "espeak"
    assert prepare(canonical_source, data, show_progress=False).failed == 0
    assert simulate_oracle(data, None, SimulateSettings(strategy="random"), show_progress=False).failed == 0
    assert tokenize(data, TokenizeSettings(checkpoint=str(tiny_checkpoint)), show_progress=False).failed == 0
    return data
