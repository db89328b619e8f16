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
