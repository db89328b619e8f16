"""`kame-desktop bench frontend`: what the oracle path costs on top of moshi.

A tiny checkpoint with a fixed LM config (dim 128, 2 layers) is built in a temp folder and loaded
twice from the same file: as KameLMModel driven by KameLMGen with an active oracle (a), and as a
bare moshi LMModel driven by moshi's LMGen (b). Steps of (a) and (b) are interleaved, alternating
which goes first, so machine noise hits both alike; overhead_ratio = median(a) / median(b).
"""

from __future__ import annotations

import logging
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from kame_desktop.events import FRAME_SECONDS, FRAME_SIZE

log = logging.getLogger(__name__)

BENCH_DIM = 128
BENCH_LAYERS = 2


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def run_bench(steps: int = 200, threads: int = 2, warmup: int = 20) -> dict:
    from moshi.models.lm import LMGen, LMModel

    from kame_desktop.frontend.kame import checkpoint as ckpt
    from kame_desktop.frontend.kame.engine import KameFrontEnd
    from kame_desktop.frontend.kame.model import KameLMGen
    from kame_desktop.frontend.kame.oracle import OracleStream
    from kame_desktop.frontend.kame.tiny import make_tiny_checkpoint

    torch.set_num_threads(threads)
    cpu = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_tiny_checkpoint(Path(tmp) / "bench", dim=BENCH_DIM, num_layers=BENCH_LAYERS)
        files = ckpt.resolve_checkpoint(str(folder))
        kame_lm = ckpt.load_lm(files, cpu, torch.float32)
        bare_lm = LMModel(device="meta", dtype=torch.float32, **files.lm_kwargs)
        state = ckpt.read_state_dict(files.lm_weights)
        del state["oracle_emb.weight"]
        bare_lm.load_state_dict(state, assign=True)
        bare_lm.eval()
        frontend = KameFrontEnd.load(str(folder), device="cpu")

    total = warmup + steps
    oracle = OracleStream(start_id=kame_lm.text_initial_token_id, pad_id=kame_lm.text_padding_token_id)
    oracle.reset(0)
    rng = np.random.default_rng(0)
    # Non-PAD tokens for every step: the oracle path is active throughout.
    oracle.append(rng.integers(4, kame_lm.text_card, size=total).tolist(), 0)
    kame_gen = KameLMGen(kame_lm, oracle)
    bare_gen = LMGen(bare_lm)
    kame_gen.streaming_forever(1)
    bare_gen.streaming_forever(1)
    n_user = kame_lm.n_q - kame_lm.dep_q
    codes = torch.from_numpy(rng.integers(0, kame_lm.card, size=(total, 1, n_user, 1)))

    kame_ms, bare_ms = [], []
    for i in range(total):
        a = lambda i=i: kame_gen.step(codes[i])  # noqa: E731
        b = lambda i=i: bare_gen.step(codes[i])  # noqa: E731
        if i % 2:
            ta, tb = _timed(a), _timed(b)
        else:
            tb, ta = _timed(b), _timed(a)
        if i >= warmup:
            kame_ms.append(ta)
            bare_ms.append(tb)

    mimi_ms, frame_ms = [], []
    pcm = torch.from_numpy(rng.standard_normal(FRAME_SIZE).astype(np.float32) * 0.1)[None, None]
    with torch.no_grad():
        for i in range(warmup + steps // 2):
            t = _timed(lambda: frontend.mimi.decode(frontend.mimi.encode(pcm)[:, : frontend.lm.dep_q]))
            if i >= warmup:
                mimi_ms.append(t)
    frontend.reset()
    frame = pcm[0, 0].numpy()
    for i in range(warmup + steps // 2):
        t = _timed(lambda: frontend.step(frame))
        if i >= warmup:
            frame_ms.append(t)

    engine_step, bare_step = statistics.median(kame_ms), statistics.median(bare_ms)
    frame_median = statistics.median(frame_ms)
    return {
        "engine_step_ms": round(engine_step, 4),
        "bare_step_ms": round(bare_step, 4),
        "overhead_ratio": round(engine_step / bare_step, 4),
        "mimi_ms": round(statistics.median(mimi_ms), 4),
        "frame_ms": round(frame_median, 4),
        "rtf": round(frame_median / (FRAME_SECONDS * 1000), 4),
        "steps": steps,
        "threads": threads,
        "lm": {"dim": BENCH_DIM, "num_layers": BENCH_LAYERS, "text_card": kame_lm.text_card},
        "machine": {"platform": platform.platform(), "cpus": torch.get_num_threads(), "torch": torch.__version__},
    }
