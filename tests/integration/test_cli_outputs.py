"""`kame-desktop run` when the results cannot be written, when it is stopped, and when its LLM
fails: one clear line on stderr, nothing half-written left behind, nothing earlier destroyed."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

TAIL = "1.0"


def kame(*args: object, **popen) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kame_desktop", *map(str, args)], capture_output=True, text=True, timeout=240, **popen
    )


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def temp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.fixture
def speech(tmp_path) -> Path:
    path = tmp_path / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(path), "Hello there, how are you today?"], check=True, capture_output=True)
    return path


def run_args(checkpoint: Path, audio: Path, output: Path, *extra: object) -> list[object]:
    return ["run", "--checkpoint", checkpoint, "--input", audio, "--output", output, "--tail", TAIL, "--device", "cpu",
            *extra]  # fmt: skip


def test_an_output_that_is_a_folder_fails_before_anything_loads(tmp_path, speech):
    # The checkpoint does not exist either: the output is checked first, so the run costs nothing.
    line = one_error_line(kame(*run_args(tmp_path / "nowhere", speech, tmp_path)))
    assert "is a folder" in line and str(tmp_path) in line
    timeline_dir = tmp_path / "timelines"
    timeline_dir.mkdir()
    line = one_error_line(kame(*run_args(tmp_path / "nowhere", speech, tmp_path / "r.wav", "--timeline", timeline_dir)))
    assert "--timeline" in line and "is a folder" in line


def test_an_output_folder_that_cannot_be_written_fails_at_once(tmp_path, speech):
    # sysfs refuses new files even to root (permission bits would not tell).
    line = one_error_line(kame(*run_args(tmp_path / "nowhere", speech, Path("/sys/reply.wav"))))
    assert "cannot write in the folder /sys" in line


def test_a_full_disk_is_one_line_and_keeps_the_earlier_timeline(tmp_path, speech, tiny_checkpoint):
    out = tmp_path / "out"
    out.mkdir()
    timeline = out / "timeline.jsonl"
    timeline.write_text('{"kind": "session_start", "frame": 0}\n', encoding="utf-8")
    before = timeline.read_bytes()

    def small_files() -> None:  # the reply (~100 kB) does not fit under 20 kB
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    # NO_TORCH_COMPILE: a compiler torch may start would hit the same limit (compile is for GPUs).
    env = dict(os.environ, NO_TORCH_COMPILE="1")
    proc = kame(*run_args(tiny_checkpoint, speech, out / "reply.wav", "--timeline", timeline),
                preexec_fn=small_files, env=env)  # fmt: skip
    line = one_error_line(proc)
    assert "could not write" in line and "free some disk space" in line
    assert timeline.read_bytes() == before, "a failed run never truncates an earlier timeline"
    assert not (out / "reply.wav").exists() and temp_files(out) == []


def test_a_timeline_on_a_full_device_is_one_line(tmp_path, speech, tiny_checkpoint):
    proc = kame(*run_args(tiny_checkpoint, speech, tmp_path / "reply.wav", "--timeline", "/dev/full"))
    assert "could not write" in one_error_line(proc)
    assert temp_files(tmp_path) == []


def test_sigterm_mid_run_leaves_no_temp_file(tmp_path, speech, tiny_checkpoint):
    out = tmp_path / "out"
    args = run_args(tiny_checkpoint, speech, out / "reply.wav", "--timeline", out / "timeline.jsonl", "--realtime")
    args[args.index("--tail") + 1] = "30"
    proc = subprocess.Popen([sys.executable, "-m", "kame_desktop", *map(str, args)], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out.is_dir() and temp_files(out)) and time.monotonic() < deadline:  # running: temp files exist
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.1)
    assert temp_files(out), "the run got going"
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "Traceback" not in stderr and "SIGTERM" in stderr
    assert temp_files(out) == [] and not (out / "reply.wav").exists()


@pytest.mark.parametrize("tail", ["nan", "inf", "-1", "1e300"])
def test_a_tail_that_is_not_a_sane_number_is_one_line(tmp_path, speech, tail):
    line = one_error_line(kame("run", "--checkpoint", tmp_path / "nowhere", "--input", speech,
                               "--output", tmp_path / "r.wav", "--tail", tail))  # fmt: skip
    assert "--tail" in line


def test_llm_failures_reach_stderr_once_each(tmp_path, speech, tiny_checkpoint, free_tcp_port):
    env = dict(os.environ, KAME_LLM_API_KEY="sk-test-not-a-real-key-0123456789")
    # A long tail: the requests (and their failures) happen while the session still runs.
    proc = kame(*run_args(tiny_checkpoint, speech, tmp_path / "reply.wav", "--llm", "openai", "--llm-url",
                          f"http://127.0.0.1:{free_tcp_port}/v1", "--llm-model", "x", "--tail", "8"), env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr  # the conversation went on without hints
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert errors and all("unreachable" in line and str(free_tcp_port) in line for line in errors)
    assert len(errors) == len(set(errors)), "each distinct error once"
    assert "sk-test" not in proc.stderr


@pytest.mark.parametrize("case", ["input", "symlink to input", "hard link to input", "timeline"])
def test_an_output_that_is_the_input_or_the_other_output_is_refused_before_anything_loads(tmp_path, speech, case):
    # The checkpoint does not exist: the files are checked first, so nothing loads.
    before = speech.read_bytes()
    reply = tmp_path / "reply.wav"
    if case == "input":
        args = ("--output", speech)
    elif case == "symlink to input":
        (tmp_path / "links").mkdir()
        (tmp_path / "links" / "reply.wav").symlink_to(speech)
        args = ("--output", tmp_path / "links" / ".." / "links" / "reply.wav")
    elif case == "hard link to input":
        os.link(speech, reply)
        args = ("--output", reply)
    else:
        args = ("--output", reply, "--timeline", tmp_path / "." / "reply.wav")
    line = one_error_line(kame("run", "--checkpoint", tmp_path / "nowhere", "--input", speech, *args))
    option = "--timeline" if case == "timeline" else "--output"
    assert line.startswith(f"error: {option} ") and "would be overwritten" in line, line
    assert ("the --output file" if case == "timeline" else "is the input") in line
    assert speech.read_bytes() == before and temp_files(tmp_path) == []
