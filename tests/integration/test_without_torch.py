"""The lite set really runs without the `kame` extra: torch and moshi are made unimportable (an
import hook, in a fresh interpreter) although this environment has them, then a lite `run`,
`--frontend kame`, and the app's offscreen smoke are run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
QUESTION = ROOT / "examples" / "question.wav"

# None in sys.modules is the import system's "not installed": `import torch` raises
# ModuleNotFoundError and importlib.util.find_spec("torch") says None, as without the wheel.
BLOCK_TORCH = """
import sys
for name in ("torch", "moshi", "bitsandbytes"):
    sys.modules[name] = None
import atexit
atexit.register(lambda: sys.modules.get("torch") is not None and print("TORCH WAS IMPORTED", file=sys.stderr))
"""


def run_blocked(code: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK_TORCH + code], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=timeout)


def isolated_env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "KAME_CONFIG_DIR": str(tmp_path / "config"), "KAME_DATA_DIR": str(tmp_path / "data"),
           "QT_QPA_PLATFORM": "offscreen"}
    env.pop("KAME_LLM_API_KEY", None)
    return env


def cli(args: list[str]) -> str:
    return f"sys.argv = ['kame-desktop', *{args!r}]\nfrom kame_desktop.cli import main\nmain()\n"


def test_lite_run_and_auto_work_without_torch(tmp_path):
    out, timeline = tmp_path / "reply.wav", tmp_path / "timeline.jsonl"
    proc = run_blocked(cli(["-v", "run", "--input", str(QUESTION), "--output", str(out), "--timeline", str(timeline),
                            "--tail", "1", "--no-realtime"]), isolated_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "TORCH WAS IMPORTED" not in proc.stderr
    assert "front-end: lite (no NVIDIA or Apple Silicon GPU" in proc.stderr or "torch is not installed" in proc.stderr
    records = [json.loads(line) for line in timeline.read_text().splitlines()]
    assert records[0]["kind"] == "session_start" and records[0]["frontend"] == "lite"
    heard = " ".join(r["text"] for r in records if r["kind"] == "asr_final")
    assert "capital" in heard.lower(), heard


def test_frontend_kame_without_the_extra_is_one_line(tmp_path):
    proc = run_blocked(cli(["run", "--frontend", "kame", "--input", str(QUESTION), "--output", str(tmp_path / "r.wav")]),
                       isolated_env(tmp_path))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'kame-desktop[kame]'" in lines[0], proc.stderr
    assert not (tmp_path / "r.wav").exists()


SMOKE = """
import dataclasses, os, time
from PySide6.QtCore import QTimer
from kame_desktop.audio.files import read_audio
from kame_desktop.audio.sources import FileSource, NullSink
from kame_desktop.config import Settings
from kame_desktop.gui.app import make_app
from kame_desktop.gui.mainwindow import MainWindow

app = make_app()
pcm = read_audio(sys.argv[1])
settings = Settings()
settings = dataclasses.replace(settings, audio=dataclasses.replace(settings.audio, listening="open_mic"),
                               frontend=dataclasses.replace(settings.frontend, kind=sys.argv[2]))
window = MainWindow(settings, audio_factory=lambda _s, _on_error, _on_recover: (FileSource(pcm, 20.0, realtime=True), NullSink()))
window.show()
window.start()

def check():
    kinds = [r.event.kind for r in window.controller.records]
    if "asr_final" in kinds or window.banner.text or time.monotonic() > give_up:
        print("STATUS", window.status.status.text(), "| KINDS", ",".join(dict.fromkeys(kinds)), "| BANNER", window.banner.text,
              "| DIALOGS", hasattr(window, "model_dialog"))
        window.close()
        app.quit()

give_up = time.monotonic() + 60  # a hang fails the asserts below, not the test's timeout
timer = QTimer(); timer.timeout.connect(check); timer.start(100)
app.exec()
window.controller.stop(join_timeout=30)  # the session's threads end before the process does
if sys.modules.get("torch") is not None:
    print("TORCH WAS IMPORTED", file=sys.stderr)
sys.stdout.flush(); sys.stderr.flush()
# A native library (ctranslate2, onnxruntime or llama.cpp) can abort while the interpreter
# finalizes ("terminate called without an active exception"): not what this tests; see the note.
os._exit(0)
"""


def smoke(tmp_path: Path, frontend: str) -> subprocess.CompletedProcess:
    code = SMOKE.replace("sys.argv[1]", repr(str(QUESTION))).replace("sys.argv[2]", repr(frontend))
    proc = run_blocked(code, isolated_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "TORCH WAS IMPORTED" not in proc.stderr, proc.stderr
    return proc


def test_the_app_runs_a_lite_session_without_torch(tmp_path):
    """The offscreen app with default settings (auto) hears examples/question.wav as a microphone."""
    proc = smoke(tmp_path, "auto")
    assert "STATUS lite" in proc.stdout and "asr_final" in proc.stdout and "| BANNER  |" in proc.stdout, proc.stdout


def test_the_app_asked_for_kame_shows_the_install_command(tmp_path):
    """A banner with the command, and no offer to download weights it could not run."""
    proc = smoke(tmp_path, "kame")
    banner = proc.stdout.split("| BANNER ", 1)[1]
    assert "pip install 'kame-desktop[kame]'" in banner and "DIALOGS False" in banner, proc.stdout
