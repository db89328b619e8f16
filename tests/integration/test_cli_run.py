"""`kame-desktop` as a user runs it: a real subprocess on the tiny checkpoint, checked through its
exit code, stderr, output audio and JSON-lines timeline (design.md's schema, spec §2.4's oracle
schedule)."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import sentencepiece
import soundfile as sf
import soxr

from kame_desktop.audio.files import read_audio
from kame_desktop.session import script_frame

SR = 24000
FRAME = 1920
TAIL = 1.0  # seconds of silence after the input: keeps every run short
PAD = 3  # the tiny checkpoint's existing_text_padding_id
SPEECH = "Hello, this is a short test of the voice companion."
TEXT = "The capital of France is Paris."

# Spec §2.4's worked example as an --oracle-file: (step the entry must land on, entry). 0.3 s is off
# the frame grid (ceil(3.75) = 4).
WORKED_EXAMPLE = [
    (2, {"t": 2 / 12.5, "reset": True, "tokens": [10, 11]}),
    (4, {"t": 0.3, "tokens": [12]}),
    (8, {"t": 8 / 12.5, "tokens": [13, 14]}),  # due at steps 6-7: both late
    (10, {"t": 10 / 12.5, "reset": True}),
]
# 1.12 × 12.5 = 14.000000000000002 in floats: the rounding keeps it on step 14. Reset, text, then tokens.
TEXT_FRAME, TEXT_ENTRY = 14, {"t": 1.12, "reset": True, "text": TEXT, "tokens": [7, 8]}
PAST_END = {"t": 600.0, "tokens": [5]}


# --- helpers -------------------------------------------------------------------------------------


def kame(*args: object) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a fresh interpreter, as the `kame-desktop` entry point does."""
    return subprocess.run(
        [sys.executable, "-m", "kame_desktop", *map(str, args)], capture_output=True, text=True, timeout=240
    )


def write_oracle_file(path: Path, script: list[dict] | str) -> Path:
    """An --oracle-file: a list of entries as JSON, or raw text for malformed files."""
    path.write_text(script if isinstance(script, str) else json.dumps(script), encoding="utf-8")
    return path


@dataclass
class Run:
    proc: subprocess.CompletedProcess[str]
    output: Path
    timeline: Path

    @property
    def records(self) -> list[dict]:
        return [json.loads(line) for line in self.timeline.read_text(encoding="utf-8").splitlines()]

    def kind(self, kind: str) -> list[dict]:
        return [r for r in self.records if r["kind"] == kind]

    def oracle_ids(self) -> dict[int, int]:
        """frame → oracle id fed (frames without an oracle_token record were fed PAD)."""
        fed = {r["frame"]: r["id"] for r in self.kind("oracle_token")}
        assert len(fed) == len(self.kind("oracle_token")), "at most one oracle token per frame"
        return fed


def run_kame(folder: Path, checkpoint: Path, audio: Path, *extra: object) -> Run:
    """`kame-desktop run` on the CPU with a short tail; outputs go to `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    output, timeline = folder / "reply.wav", folder / "timeline.jsonl"
    proc = kame(
        "run", "--checkpoint", checkpoint, "--input", audio, "--output", output,
        "--timeline", timeline, "--tail", TAIL, "--device", "cpu", *extra,
    )  # fmt: skip
    return Run(proc, output, timeline)


def assert_ok(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr


def assert_one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and lines[0] != "error:", proc.stderr
    return lines[0]


def expected_samples(audio: Path) -> int:
    n = len(read_audio(audio)) + TAIL * SR
    return math.ceil(n / FRAME) * FRAME


def text_card(checkpoint: Path) -> int:
    return json.loads((checkpoint / "config.json").read_text())["text_card"]


def tokenizer(checkpoint: Path) -> sentencepiece.SentencePieceProcessor:
    return sentencepiece.SentencePieceProcessor(model_file=str(checkpoint / "tokenizer.model"))


# --- fixtures: espeak-ng speech in two formats, and the runs shared by several tests --------------


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> tuple[np.ndarray, int]:
    if shutil.which("espeak-ng") is None:
        pytest.skip("needs espeak-ng")
    path = tmp_path_factory.mktemp("speech") / "espeak.wav"
    subprocess.run(["espeak-ng", "-w", str(path), SPEECH], check=True, capture_output=True)
    data, sr = sf.read(path, dtype="float32")
    return data, sr


@pytest.fixture(scope="module")
def speech_44k_stereo(speech, tmp_path_factory) -> Path:
    data, sr = speech
    left = soxr.resample(data, sr, 44100)
    path = tmp_path_factory.mktemp("in") / "speech-44k1-stereo.wav"
    sf.write(path, np.stack([left, 0.5 * left], axis=1), 44100, subtype="PCM_16")
    assert (sf.info(path).samplerate, sf.info(path).channels, sf.info(path).subtype) == (44100, 2, "PCM_16")
    return path


@pytest.fixture(scope="module")
def speech_wavex(speech, tmp_path_factory) -> Path:
    data, sr = speech
    path = tmp_path_factory.mktemp("in") / "speech-wavex.wav"
    sf.write(path, data, sr, subtype="PCM_16", format="WAVEX")
    raw = path.read_bytes()
    fmt = raw.index(b"fmt ")
    assert int.from_bytes(raw[fmt + 8 : fmt + 10], "little") == 0xFFFE  # WAVE_FORMAT_EXTENSIBLE
    return path


@pytest.fixture(scope="module")
def scripted(tiny_checkpoint, speech_44k_stereo, tmp_path_factory) -> Run:
    """One run with the worked example, a text entry and an entry past the end."""
    assert [script_frame(entry["t"]) for _, entry in WORKED_EXAMPLE] == [step for step, _ in WORKED_EXAMPLE]
    assert script_frame(TEXT_ENTRY["t"]) == TEXT_FRAME
    folder = tmp_path_factory.mktemp("scripted")
    script = [entry for _, entry in WORKED_EXAMPLE] + [TEXT_ENTRY, PAST_END]
    oracle = write_oracle_file(folder / "script.json", script)
    run = run_kame(folder, tiny_checkpoint, speech_44k_stereo, "--oracle-file", oracle)
    assert_ok(run.proc)
    return run


@pytest.fixture(scope="module")
def greedy_runs(tiny_checkpoint, speech_wavex, tmp_path_factory) -> tuple[Run, Run]:
    folder = tmp_path_factory.mktemp("greedy")
    runs = tuple(run_kame(folder / name, tiny_checkpoint, speech_wavex, "--temperature", 0) for name in "ab")
    for run in runs:
        assert_ok(run.proc)
    return runs


# --- oracle scripts ------------------------------------------------------------------------------


def test_worked_example_schedule(scripted, tiny_checkpoint):
    start = text_card(tiny_checkpoint)
    fed = scripted.oracle_ids()
    assert [fed.get(frame, PAD) for frame in range(13)] == [3, 3, start, 10, 11, 12, 3, 3, 3, 3, start, 3, 3]
    late = scripted.kind("oracle_late")
    assert [(r["frame"], r["count"], r["request"]) for r in late] == [(8, 2, 0)]
    resets = scripted.kind("oracle_reset")
    assert [(r["frame"], r["request"]) for r in resets] == [(2, 0), (10, 1), (TEXT_FRAME, 2)]
    starts = [r for r in scripted.kind("oracle_token") if r["id"] == start]
    assert all(r["piece"] == "<start>" for r in starts)


def test_text_entry_is_tokenized_whole_after_the_start_token(scripted, tiny_checkpoint):
    sp = tokenizer(tiny_checkpoint)
    ids = sp.encode(TEXT)
    assert len(ids) > 3
    run = [text_card(tiny_checkpoint), *ids, *TEXT_ENTRY["tokens"]]  # reset, then text, then tokens
    fed = {frame: i for frame, i in scripted.oracle_ids().items() if frame >= TEXT_FRAME}
    assert fed == {TEXT_FRAME + n: i for n, i in enumerate(run)}
    for r in scripted.kind("oracle_token"):
        if r["frame"] > TEXT_FRAME:
            assert r["piece"] == sp.id_to_piece(r["id"]) and r["request"] == 2


def test_entry_past_the_end_is_ignored_with_a_warning(scripted):
    warnings = [line for line in scripted.proc.stderr.splitlines() if "past the end" in line]
    assert len(warnings) == 1 and str(script_frame(PAST_END["t"])) in warnings[0]  # frame 7500


# --- audio and timeline --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "run_name, input_name", [("scripted", "speech_44k_stereo"), ("greedy_runs", "speech_wavex")]
)
def test_output_audio_and_timeline(request, run_name, input_name, tiny_checkpoint):
    run = request.getfixturevalue(run_name)
    run = run[0] if isinstance(run, tuple) else run
    audio = request.getfixturevalue(input_name)

    info = sf.info(run.output)
    assert (info.samplerate, info.channels) == (SR, 1)
    assert info.frames == expected_samples(audio)
    n_frames = info.frames // FRAME

    records = run.records
    first = records[0]
    assert first["kind"] == "session_start" and first["frame"] == 0
    assert (first["frontend"], first["device"], first["model"]) == ("kame", "cpu", str(tiny_checkpoint))
    for r in records:
        assert {"kind", "frame", "t"} <= r.keys()
        assert r["t"] == round(r["frame"] * 0.08, 6)
        assert 0 <= r["frame"] < n_frames
    frames = [r["frame"] for r in records]
    assert frames == sorted(frames)
    tokens = run.kind("assistant_token")
    assert tokens, "the random tiny model says something"
    assert all(isinstance(r["id"], int) and isinstance(r["piece"], str) for r in tokens)


def test_greedy_runs_are_identical(greedy_runs):
    a, b = greedy_runs
    assert a.output.read_bytes() == b.output.read_bytes()
    assert a.timeline.read_text() == b.timeline.read_text()


# --- bad input: each case gives the run arguments it changes; the error names the culprit file --


def _corrupt_checkpoint(tmp: Path, request) -> dict:
    folder = request.getfixturevalue("tiny_checkpoint_copy")
    (folder / "model.safetensors").write_bytes(b"\x00\x10 not safetensors at all" * 40)
    return {"checkpoint": folder, "culprit": "model.safetensors"}


def _text_as_wav(tmp: Path, request) -> dict:
    path = tmp / "notes.wav"
    path.write_text("this is not audio\n")
    return {"audio": path, "culprit": path.name}


def _oracle(script: list[dict] | str):
    return lambda tmp, request: {
        "oracle": write_oracle_file(tmp / "script.json", script),
        "culprit": "script.json",
    }


BAD_INPUTS = {
    "missing-input": lambda tmp, request: {"audio": tmp / "absent.wav", "culprit": "absent.wav"},
    "text-named-wav": _text_as_wav,
    "missing-checkpoint": lambda tmp, request: {"checkpoint": tmp / "nowhere", "culprit": "nowhere"},
    "corrupt-weights": _corrupt_checkpoint,
    "oracle-not-json": _oracle('[{"t": 1.0, "text": "unterminated'),
    "oracle-negative-t": _oracle([{"t": -0.5, "reset": True}]),
    "oracle-nan-t": _oracle('[{"t": NaN, "reset": true}]'),
    "oracle-token-out-of-range": _oracle([{"t": 0.0, "reset": True, "tokens": [10, 100_000]}]),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_error_line(case, request, tmp_path, tiny_checkpoint, speech_wavex):
    args = {"checkpoint": tiny_checkpoint, "audio": speech_wavex, **BAD_INPUTS[case](tmp_path, request)}
    extra = ("--oracle-file", args["oracle"]) if "oracle" in args else ()
    run = run_kame(tmp_path / "out", args["checkpoint"], args["audio"], *extra)
    assert args["culprit"] in assert_one_line_error(run.proc)
    assert not run.output.exists()


# --- other commands ------------------------------------------------------------------------------


def test_make_tiny_checkpoint(tmp_path):
    from safetensors import safe_open

    folder = tmp_path / "made"
    assert_ok(kame("make-tiny-checkpoint", folder))
    names = {"config.json", "model.safetensors", "tokenizer.model", "mimi.safetensors", "mimi_config.json"}
    assert names <= {p.name for p in folder.iterdir()}
    config = json.loads((folder / "config.json").read_text())
    with safe_open(folder / "model.safetensors", framework="numpy") as f:
        oracle_emb = f.get_tensor("oracle_emb.weight")
    assert oracle_emb.shape[1] == config["dim"]
    assert tokenizer(folder).vocab_size() == config["text_card"]
    json.loads((folder / "mimi_config.json").read_text())


def test_bench_frontend_prints_one_json_object():
    proc = kame("bench", "frontend", "--json", "--steps", 20)
    assert_ok(proc)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("overhead_ratio", "engine_step_ms", "bare_step_ms", "mimi_ms", "rtf"):
        assert isinstance(result[key], int | float) and result[key] > 0, key


def test_bench_idle_prints_its_figures():
    proc = kame("bench", "idle", "--json", "--seconds", 2)
    assert_ok(proc)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("idle_cpu_percent", "baseline_cpu_percent", "ready_cold_s", "ready_warm_s"):
        assert isinstance(result[key], int | float) and result[key] > 0, key
    assert result["ready_cold_s"] >= 0.5 * result["ready_warm_s"]  # both are whole start-ups


def test_help_does_not_import_torch():
    check = (
        "import contextlib, io, sys\n"
        "from kame_desktop import cli\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        "    codes = [cli.app(args, standalone_mode=False) for args in (['--help'], ['run', '--help'])]\n"
        "assert codes == [0, 0], codes\n"
        "assert 'run' in out.getvalue() and '--oracle-file' in out.getvalue()\n"
        "heavy = [m for m in ('torch', 'moshi') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    assert_ok(subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=60))
    proc = kame("--help")
    assert_ok(proc)
    assert "run" in proc.stdout and "bench" in proc.stdout
