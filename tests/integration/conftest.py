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


@pytest.fixture(scope="session")
def oracle_llm_server(tmp_path_factory):
    """A real llama_cpp.server with the embedded SmolLM2 for simulate-oracle, on one thread for
    prompts too: its default batch threads (every core) spin against each other on a busy
    2-core machine (a 150-token prompt: 15 s instead of 4 s here)."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    from kame_desktop.backend.llm.local import embedded_model_path

    log = (tmp_path_factory.mktemp("oracle-llm") / "server.log").open("wb")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(embedded_model_path()), "--host", "127.0.0.1",
         "--port", str(port), "--n_ctx", "2048", "--n_threads", "1", "--n_threads_batch", "1"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=2):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"llama_cpp.server did not start (exit code {proc.poll()})")
            time.sleep(0.2)
    yield url
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()
