"""`kame-desktop bench idle`: what a companion left open all day costs, and how soon it listens.

- `idle_cpu_percent`: CPU time (all threads of the process) used by a lite session fed silence
  in real time, per second of wall time, in % of one core — after a warm-up of `WARMUP_S`, so
  the one-off work of a start (the LLM reading its system prompt) is not counted as idling. Its
  baseline, measured in the same run, is the bare paced loop with no session
  (`baseline_cpu_percent`).
- `ready_cold_s` / `ready_warm_s`: from starting a fresh interpreter to the lite session
  listening (front-end and back-end built and started), first with an empty cache (the embedded
  Whisper is assembled from its PyPI parts) and then again with that cache.
"""

from __future__ import annotations

import json
import logging
import platform
import resource
import subprocess
import sys
import tempfile
import time

log = logging.getLogger(__name__)

WARMUP_S = 10.0

# Run in a fresh interpreter: imports and model loading count, as at a double-click.
_READY = """
import json, sys, time
started = float(sys.argv[1])
from kame_desktop.assembly import build_session
from kame_desktop.config import FrontEndSettings, Settings
session = build_session(Settings(frontend=FrontEndSettings(kind="lite")))
session.start()
ready = time.time() - started
session.close()
print(json.dumps({"ready_s": ready}))
"""


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _ready_s(cache_dir: str) -> float:
    import os

    env = dict(os.environ, KAME_CACHE_DIR=cache_dir)
    proc = subprocess.run([sys.executable, "-c", _READY, repr(time.time())], env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"the lite session did not start: {proc.stderr.strip()[-500:]}")
    return round(json.loads(proc.stdout.strip().splitlines()[-1])["ready_s"], 2)


class _MeteredSilence:
    """Paced silence; notes the process's CPU time and the wall clock once warm-up is over."""

    def __init__(self, warmup_s: float, seconds: float) -> None:
        import numpy as np

        from kame_desktop.audio.sources import FileSource
        from kame_desktop.events import FRAME_SECONDS, FRAME_SIZE

        self._inner = FileSource(np.zeros(FRAME_SIZE, np.float32), warmup_s + seconds, realtime=True)
        self._warm_frame = round(warmup_s / FRAME_SECONDS)
        self._frames = 0
        self.start: tuple[float, float] | None = None

    def read(self):
        if self._frames == self._warm_frame:
            self.start = (_cpu_s(), time.monotonic())
        self._frames += 1
        return self._inner.read()

    def percent(self) -> float:
        assert self.start is not None
        cpu, wall = self.start
        return round(100 * (_cpu_s() - cpu) / (time.monotonic() - wall), 2)


def _paced_silence_cpu(seconds: float, session=None, warmup_s: float = 0.0) -> float:
    """% of one core used while `seconds` of silence are paced through `session` (or nowhere)."""
    from kame_desktop.audio.sources import NullSink

    source = _MeteredSilence(warmup_s, seconds)
    if session is not None:
        session.run(source, NullSink())
    else:
        while source.read() is not None:
            pass
    return source.percent()


def run_bench(seconds: float = 60.0) -> dict:
    from kame_desktop.assembly import build_session
    from kame_desktop.config import FrontEndSettings, Settings

    with tempfile.TemporaryDirectory() as cache:
        cold = _ready_s(cache)
        warm = _ready_s(cache)
    log.info("ready: cold %.2f s, warm %.2f s", cold, warm)
    baseline = _paced_silence_cpu(min(seconds, 10.0))
    session = build_session(Settings(frontend=FrontEndSettings(kind="lite")))
    try:
        idle = _paced_silence_cpu(seconds, session, warmup_s=WARMUP_S)
    finally:
        session.close()
    log.info("idle: %.1f %% of one core (bare paced loop %.1f %%)", idle, baseline)
    return {
        "idle_cpu_percent": idle,
        "baseline_cpu_percent": baseline,
        "ratio": round(idle / baseline, 2) if baseline else None,
        "seconds": seconds,
        "warmup_s": WARMUP_S,
        "ready_cold_s": cold,
        "ready_warm_s": warm,
        "threads": {"whisper": 1, "llama": 1, "piper": 1},
        "machine": {"platform": platform.platform()},
    }
