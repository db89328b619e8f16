"""kame_finetune's own sample (SpokenWOZ, CC BY-NC 4.0, read from ../shared/reference): `train
prepare` on its transcripts with stand-in silent WAVs, then simulate-oracle at the sample's 5 s
interval with a scripted LLM, gives the reference's oracle_raw/ events field for field (all but
the LLM's prediction). Five transcripts have overlapping speech: sorting their words by start time
would move 88 of the 253 events to another speaker or hint."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import soundfile as sf

from kame_desktop.training.simulate_oracle import SimulateSettings, simulate_oracle

SAMPLE_RATE = 8000  # the sample's WAVs are 8 kHz stereo
INTERVAL = 5.0  # the sample's oracle files were generated at 5 s


class ScriptedLlm:
    """The same answer to every request: the prediction is the one field not compared."""

    name = "scripted"
    context_tokens = 4096

    def __init__(self) -> None:
        self.calls = 0

    async def stream(self, messages):
        self.calls += 1
        yield "a scripted prediction"

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    async def aclose(self) -> None:
        pass


def test_spokenwoz_sample_oracle_events_match_the_reference(spokenwoz_sample, tmp_path):
    from typer.testing import CliRunner

    from kame_desktop.cli import app

    src = tmp_path / "src"
    shutil.copytree(spokenwoz_sample / "text", src / "text")  # a temporary copy, never the project
    (src / "audio").mkdir()
    ids = sorted(p.stem for p in (src / "text").glob("*.json"))
    assert len(ids) == 10
    for dialogue in ids:
        words = json.loads((src / "text" / f"{dialogue}.json").read_text())
        frames = math.ceil(max(w["end"] for w in words) * SAMPLE_RATE)
        sf.write(src / "audio" / f"{dialogue}.wav", np.zeros((frames, 2), dtype=np.int16), SAMPLE_RATE, subtype="PCM_16")

    data = tmp_path / "data"
    result = CliRunner().invoke(app, ["train", "prepare", str(src), str(data)])
    assert result.exit_code == 0, result.output
    assert "10 done" in result.output
    llm = ScriptedLlm()
    report = simulate_oracle(data, llm, SimulateSettings(interval=INTERVAL, concurrency=8), show_progress=False)
    assert (report.done, report.failed) == (10, 0), report.problems

    matched = total = 0
    for dialogue in ids:
        ours = json.loads((data / "oracle_raw" / f"{dialogue}.json").read_text())
        theirs = json.loads((spokenwoz_sample / "oracle_raw" / f"{dialogue}.json").read_text())
        assert len(ours) == len(theirs), dialogue
        for mine, ref in zip(ours, theirs, strict=True):
            assert list(mine) == list(ref)  # the same keys in the same order
            total += 1
            matched += {k: v for k, v in mine.items() if k != "prediction"} == {
                k: v for k, v in ref.items() if k != "prediction"}
    assert (matched, total) == (253, 253)
    assert llm.calls + report.counters.get("cache_hits", 0) == 253  # two events ask the same as an earlier one
