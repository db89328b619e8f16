"""Shared fixtures: a tiny random KAME checkpoint in the real on-disk layout, built once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a model hub


def _has_gpu() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return torch.cuda.is_available() or (mps is not None and mps.is_available())


def pytest_collection_modifyitems(config, items):
    if any("gpu" in item.keywords for item in items) and not _has_gpu():
        skip = pytest.mark.skip(reason="needs a CUDA or MPS device")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A tiny KAME checkpoint folder (read-only for tests: copy it before changing files)."""
    from kame_desktop.frontend.kame.tiny import make_tiny_checkpoint

    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-kame")


@pytest.fixture
def tiny_checkpoint_copy(tiny_checkpoint, tmp_path) -> Path:
    """A private copy of the tiny checkpoint that a test may corrupt."""
    import shutil

    return Path(shutil.copytree(tiny_checkpoint, tmp_path / "tiny-kame"))


# ---------------------------------------------------------------------------------------------
# LLM back-end fixtures: a real llama_cpp.server with the embedded SmolLM2, and a stub server
# for the failures a real one will not produce on demand. (Section owned by the LLM providers.)
# ---------------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn_llama_server(log_dir: Path, timeout: float = 60.0):
    """Start `python -m llama_cpp.server` with the embedded GGUF; return (process, base URL)
    once /v1/models answers. Fails the test with the server's log tail otherwise."""
    import subprocess
    import sys
    import time
    import urllib.request

    from kame_desktop.backend.llm.local import embedded_model_path

    port = free_port()
    log_path = log_dir / f"llama-server-{port}.log"
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(embedded_model_path()),
           "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096", "--n_threads", "1"]
    with log_path.open("wb") as log:  # a file, not a pipe: a full pipe would block the server
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{base_url}/models", timeout=2) as r:
                if r.status == 200:
                    return proc, base_url
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_process(proc)
            tail = log_path.read_text(errors="replace")[-2000:]
            pytest.fail(f"llama_cpp.server did not come up on port {port} "
                        f"(exit code {proc.returncode}); log tail:\n{tail}")
        time.sleep(0.2)


def stop_process(proc, grace: float = 5.0) -> None:
    """Terminate, then kill after `grace` seconds."""
    import subprocess

    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def free_tcp_port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory):
    """Base URL (http://127.0.0.1:PORT/v1) of a real llama_cpp.server shared by the session."""
    proc, base_url = spawn_llama_server(tmp_path_factory.mktemp("llama-server"))
    yield base_url
    stop_process(proc)


@pytest.fixture
def spawn_llama(tmp_path):
    """Factory for private llama_cpp.server processes (a test may kill them); all are stopped
    at the end. Returns (process, base URL)."""
    procs = []

    def spawn():
        proc, url = spawn_llama_server(tmp_path)
        procs.append(proc)
        return proc, url

    yield spawn
    for proc in procs:
        stop_process(proc)


STUB_BEHAVIOURS = ("ok", "401", "429", "cutoff", "garbage", "stall")


@pytest.fixture
def stub_llm_server():
    """Factory: start(behaviour) → a stub OpenAI-compatible server on 127.0.0.1 whose chat
    endpoint answers as told: "ok" (a normal stream), "401" (echoes the key, as real servers
    sometimes do), "429", "cutoff" (text, then the connection closes with no finish reason),
    "garbage" (SSE data that is not JSON) or "stall" (headers, then silence). The returned object
    has `url` and `requests` (the lower-cased headers of each request received)."""
    import json
    import threading
    from dataclasses import dataclass, field
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    release = threading.Event()  # ends stalled responses at teardown
    servers: list[ThreadingHTTPServer] = []

    @dataclass
    class Stub:
        url: str
        requests: list[dict[str, str]] = field(default_factory=list)

    def chunk(content: str | None, finish: str | None = None) -> bytes:
        delta = {} if content is None else {"content": content}
        body = {"id": "stub", "object": "chat.completion.chunk", "created": 0, "model": "stub",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return b"data: " + json.dumps(body).encode() + b"\n\n"

    def start(behaviour: str) -> Stub:
        assert behaviour in STUB_BEHAVIOURS, behaviour
        stub = Stub(url="")

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep the test output clean
                pass

            def _json(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _sse(self, *events: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()  # HTTP/1.0: the body ends when the connection closes
                for event in events:
                    self.wfile.write(event)
                    self.wfile.flush()

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                stub.requests.append({k.lower(): v for k, v in self.headers.items()})
                if behaviour == "401":
                    key = self.headers.get("Authorization", "").removeprefix("Bearer ")
                    self._json(401, {"error": {"message": f"Incorrect API key provided: {key}",
                                               "type": "invalid_request_error",
                                               "code": "invalid_api_key"}})
                elif behaviour == "429":
                    self._json(429, {"error": {"message": "Rate limit reached", "type": "requests"}})
                elif behaviour == "ok":
                    self._sse(chunk("Hello"), chunk(" there"), chunk(None, "stop"), b"data: [DONE]\n\n")
                elif behaviour == "cutoff":
                    self._sse(chunk("Hello"), chunk(" the"))
                elif behaviour == "garbage":
                    self._sse(b"data: {this is not json\n\n")
                else:  # stall
                    self._sse()
                    release.wait(30)

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        stub.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        return stub

    yield start
    release.set()
    for server in servers:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------------------------------------
# Model downloads: a local HTTP server posing as the Hugging Face hub (what HF_ENDPOINT names),
# for kame_desktop.downloads and the model manager. (Section owned by tests/unit/test_downloads.py.)
# ---------------------------------------------------------------------------------------------


def _start_fake_hub():
    """One repo (`hub.repo`, a tiny KAME-like checkpoint + a spare file) served through the hub's
    model_info, paths-info and resolve (with Range) endpoints, with failure knobs:
    `corrupt` (names served with a flipped byte), `drop_after` (name -> close the connection after
    N bytes, once), `ignore_range`; `ranges` records each resolve's Range header per name."""
    import hashlib
    import json
    import random
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import parse_qs, unquote

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _json(self, obj, status=200):
            body = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            hub, path = self.server, unquote(self.path.split("?")[0])
            if path.startswith(f"/api/models/{hub.repo}"):  # model_info (any revision)
                return self._json({"id": hub.repo, "sha": hub.commit, "gated": False,
                                   "cardData": {"license": hub.license}, "tags": [f"license:{hub.license}"]})
            prefix = f"/{hub.repo}/resolve/"
            name = path.removeprefix(prefix).partition("/")[2] if path.startswith(prefix) else None
            if name not in hub.files:
                return self._json({"error": "Entry not found"}, 404)
            data = hub.files[name]
            if name in hub.corrupt:
                data = bytes([data[0] ^ 0xFF]) + data[1:]
            rng = self.headers.get("Range")
            hub.ranges.setdefault(name, []).append(rng)
            start = 0
            if rng and not hub.ignore_range:
                start = int(rng.removeprefix("bytes=").split("-")[0])
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            cut = hub.drop_after.pop(name, None)
            if cut is not None:  # announce everything, send N bytes, hang up
                self.wfile.write(body[:cut])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body)

        def do_POST(self):  # paths-info: form field `paths`, repeated
            hub, path = self.server, unquote(self.path.split("?")[0])
            if not path.startswith(f"/api/models/{hub.repo}/paths-info/"):
                return self._json({"error": "Repository not found"}, 404)
            form = parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
            self._json([hub.entry(p) for p in form.get("paths", []) if p in hub.files])

    class FakeHub(ThreadingHTTPServer):
        daemon_threads = True
        repo = "acme/kame-test"
        commit = "0123456789abcdef0123456789abcdef01234567"
        license = "mit"

        def __init__(self):
            super().__init__(("127.0.0.1", 0), Handler)
            rng = random.Random(0)
            self.weights = rng.randbytes(1_500_000)
            config = {"moshi_name": "model.safetensors", "mimi_name": "mimi.safetensors",
                      "tokenizer_name": "tok.model"}
            self.files = {
                "config.json": json.dumps(config).encode(),
                "model.safetensors": self.weights,
                "mimi.safetensors": rng.randbytes(70_000),
                "tok.model": b"not really sentencepiece",
                "spare.bin": b"x" * 10,
            }
            self.lfs = {"model.safetensors", "mimi.safetensors"}
            self.corrupt: set[str] = set()
            self.drop_after: dict[str, int] = {}
            self.ignore_range = False
            self.ranges: dict[str, list] = {}
            self.url = f"http://127.0.0.1:{self.server_address[1]}"

        def entry(self, path):
            data = self.files[path]
            blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
            e = {"type": "file", "path": path, "size": len(data), "oid": blob}
            if path in self.lfs:
                e["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
            return e

        def stop(self):
            self.shutdown()
            self.server_close()

    hub = FakeHub()
    threading.Thread(target=hub.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return hub


@pytest.fixture
def fake_hub(monkeypatch):
    """A fake hub on 127.0.0.1 (`.url` is the endpoint), with huggingface_hub's offline mode
    (turned on above for every other test) lifted for this test only."""
    from huggingface_hub import constants
    from huggingface_hub.utils import reset_sessions

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    reset_sessions()  # sessions built in offline mode refuse every request
    hub = _start_fake_hub()
    yield hub
    hub.stop()
    monkeypatch.undo()
    reset_sessions()


# ---------------------------------------------------------------------------------------------
# Sound-card fixtures: a real, paced JACK server (dummy backend, no hardware) that PortAudio
# sees as the device "system". (Section owned by the audio device.)
# ---------------------------------------------------------------------------------------------

JACK_SERVER_NAME = "kame-test"  # a private server: never touch a developer's running JACK


class JackServer:
    """`jackd --no-realtime -d dummy -r RATE -p 480` as a subprocess. PortAudio (inside
    sounddevice) keeps a JACK client connected from its initialisation on, so every restart
    disconnects PortAudio first and reconnects it after: with no stream open, by construction
    of the tests."""

    device = "system"  # PortAudio's name for the JACK server's ports

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.proc = None
        self.rate = 0

    def start(self, rate: int = 24000) -> None:
        import shutil
        import subprocess
        import time

        if shutil.which("jackd") is None:
            raise RuntimeError("jackd is not installed (sudo apt-get install jackd2)")
        env = {**os.environ, "JACK_NO_AUDIO_RESERVATION": "1"}
        log = (self.log_dir / f"jackd-{rate}.log").open("wb")
        self.proc = subprocess.Popen(
            ["jackd", "-n", JACK_SERVER_NAME, "--no-realtime", "-d", "dummy", "-r", str(rate), "-p", "480"],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )
        self.rate = rate
        ready = subprocess.run(["jack_wait", "-s", JACK_SERVER_NAME, "-w", "-t", "10"], env=env,
                               capture_output=True, text=True) if shutil.which("jack_wait") else None
        time.sleep(0.2 if ready is not None else 1.5)
        if self.proc.poll() is not None or (ready is not None and ready.returncode != 0):
            tail = (self.log_dir / f"jackd-{rate}.log").read_text(errors="replace")[-1500:]
            self._kill()
            raise RuntimeError(f"jackd did not start; log tail:\n{tail}")
        self._portaudio(initialize=True)

    def stop(self) -> None:
        self._portaudio(initialize=False)
        self._kill()

    def restart(self, rate: int) -> None:
        self.stop()
        self.start(rate)

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): streams stop being called back, as when a device is
        unplugged. Resume before anything talks to the server again."""
        import signal

        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        import signal

        self.proc.send_signal(signal.SIGCONT)

    def _kill(self) -> None:
        if self.proc is not None:
            self.resume()
            stop_process(self.proc)
            self.proc = None

    @staticmethod
    def _portaudio(initialize: bool) -> None:
        # sounddevice initialises PortAudio at import; until then there is nothing to redo.
        import sys

        sd = sys.modules.get("sounddevice")
        if sd is None:
            return
        if initialize:
            sd._initialize()  # PortAudio connects to the new server and lists its ports
        else:
            sd._terminate()  # never leave PortAudio connected to a dead server (it asserts)


@pytest.fixture(scope="session")
def jack_server(tmp_path_factory):
    """A running JACK dummy server at 24 kHz (tests may restart it at another rate and must
    put it back); skips the test when jackd or PortAudio is unavailable."""
    os.environ["JACK_DEFAULT_SERVER"] = JACK_SERVER_NAME  # read by libjack inside PortAudio
    os.environ["JACK_NO_START_SERVER"] = "1"  # never auto-start a default server
    server = JackServer(tmp_path_factory.mktemp("jack"))
    try:
        import sounddevice as sd  # initialises PortAudio (before the server is up)
    except ImportError:
        pytest.skip("sounddevice is not installed (pip install sounddevice)")
    except OSError:
        pytest.skip("PortAudio is not installed (sudo apt-get install libportaudio2)")
    sd._terminate()  # reconnected by start(), once the server runs
    try:
        server.start(24000)
    except RuntimeError as e:
        sd._initialize()
        pytest.skip(f"no JACK server for real audio streams: {e}")
    yield server
    server.stop()
    sd._initialize()  # balanced for sounddevice's own terminate at exit
