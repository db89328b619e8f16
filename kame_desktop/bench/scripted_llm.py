"""A scripted OpenAI-compatible chat server on 127.0.0.1, standing in for a cloud LLM: it serves
concurrent requests, waits a first-token delay, then streams a canned answer a word at a time at
a steady rate. `bench oracle-lag --scripted-llm` and the tests start it; nothing leaves the machine.

Request n (counted from 1, in arrival order) answers "Answer n: …", so a test can tell whose text
reached the front-end. Its first-token delay is `delays[n - 1]` where a list is given, else drawn
from `delay_range` by a generator seeded with `seed` and the request's messages: the same prompt
waits the same in every run and every arm of a benchmark, so arms that ask the same words are
compared on the same delays (a draw in arrival order gave each arm other delays). A client that
hangs up stops its stream. `script`, where given, says instead what request n streams: a list of
`delta` objects (text, or pieces of structured `tool_calls`), ending with finish reason
"tool_calls" when the last delta holds one."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ANSWER_WORDS = ["the", "short", "answer", "is", "that", "it", "depends", "on", "what", "you", "mean,", "but", "in", "most", "cases", "the", "usual", "choice", "works", "well", "and", "you", "can", "always", "ask", "me", "for", "more", "detail", "if", "you", "want", "it."]


@dataclass
class ScriptedRequest:
    number: int
    messages: list[dict]
    received: float  # time.monotonic()
    first_token_delay: float
    tools: list[dict] | None = None  # the tools the request offered
    words_sent: int = 0
    hung_up: bool = False  # the client closed the connection before the answer ended


@dataclass
class ScriptedLlmServer:
    delay_range: tuple[float, float] = (0.3, 0.9)
    delays: Sequence[float] | None = None  # per request, in arrival order (past the end: delay_range)
    words_per_s: float = 40.0
    answer_words: int = 30
    seed: int = 0
    script: Callable[[int, list[dict]], list[dict]] | None = None  # (n, messages) -> the deltas to stream
    requests: list[ScriptedRequest] = field(default_factory=list)
    url: str = ""

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server: ThreadingHTTPServer | None = None

    def __enter__(self) -> ScriptedLlmServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, name="scripted-llm", daemon=True).start()
        self._server = server
        self.url = f"http://127.0.0.1:{server.server_address[1]}/v1"

    def close(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _register(self, messages: list[dict], tools: list[dict] | None) -> ScriptedRequest:
        with self._lock:
            number = len(self.requests) + 1
            if self.delays is not None and number <= len(self.delays):
                delay = self.delays[number - 1]
            else:
                keyed = f"{self.seed}|{json.dumps(messages, sort_keys=True)}"
                delay = random.Random(keyed).uniform(*self.delay_range)
            request = ScriptedRequest(number, messages, time.monotonic(), delay, tools)
            self.requests.append(request)
            return request

    def _answer(self, number: int) -> list[str]:
        words = [f"Answer {number}:"] + ANSWER_WORDS[: max(0, self.answer_words - 1)]
        return [w if i == 0 else " " + w for i, w in enumerate(words)]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # the body ends when the connection closes

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # /v1/models, for a connection test
                self._send(200, "application/json", json.dumps({"object": "list", "data": [{"id": "scripted"}]}))

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                request = server._register(body.get("messages", []), body.get("tools"))
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                try:
                    self.wfile.write(b": waiting\n\n")  # headers out: the client starts reading
                    self.wfile.flush()
                    if server._stop.wait(request.first_token_delay):
                        return
                    deltas = (server.script(request.number, request.messages) if server.script
                              else [{"content": word} for word in server._answer(request.number)])
                    for delta in deltas:
                        self._event(delta, None)
                        request.words_sent += 1
                        if server._stop.wait(1.0 / server.words_per_s):
                            return
                    self._event({}, "tool_calls" if deltas and "tool_calls" in deltas[-1] else "stop")
                    self.wfile.write(b"data: [DONE]\n\n")
                    self.wfile.flush()
                except OSError:  # BrokenPipe / ConnectionReset: the client hung up
                    request.hung_up = True

            def _event(self, delta: dict, finish: str | None) -> None:
                chunk = {"id": "scripted", "object": "chat.completion.chunk", "created": 0, "model": "scripted",
                         "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
                self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                self.wfile.flush()

            def _send(self, status: int, content_type: str, text: str) -> None:
                data = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler
