"""`kame-desktop bench frontend`: what the oracle path costs on top of moshi, and (`--shape 7b`)
whether a Moshi-7B-sized front-end keeps the 80 ms frame budget on a GPU.

`tiny`: a tiny checkpoint with a fixed LM config (dim 128, 2 layers) is built in a temp folder
and loaded twice from the same file: as KameLMModel driven by KameLMGen with an active oracle
(a), and as a bare moshi LMModel driven by moshi's LMGen (b). Steps of (a) and (b) are
interleaved, alternating which goes first, so machine noise hits both alike;
overhead_ratio = median(a) / median(b).

`7b`: KameLMModel with Moshi 7B's config and random weights, a random full-size Mimi and the
tiny tokenizer (no download); warm-up time, p50/p99 frame time over `steps` frames with and
without CUDA graphs, peak memory against the estimate. On a CPU (or `--device meta`) it only
builds the model on the meta device and reports the plan: 7B steps on a CPU take seconds.
"""

from __future__ import annotations

import contextlib
import logging
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kame_desktop.events import FRAME_SECONDS, FRAME_SIZE

log = logging.getLogger(__name__)

BENCH_DIM = 128
BENCH_LAYERS = 2
SHAPES = ("tiny", "7b")
MOSHI_7B_PARAMETERS = 7_818_805_248  # with the oracle table (spec §1.1)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
    elif device.type == "mps":
        torch.mps.synchronize()


def _timed(fn, device: torch.device | None = None) -> float:
    start = time.perf_counter()
    fn()
    if device is not None:
        _sync(device)
    return (time.perf_counter() - start) * 1000


def _machine() -> dict[str, Any]:
    machine = {"platform": platform.platform(), "cpus": torch.get_num_threads(), "torch": torch.__version__}
    if torch.cuda.is_available():
        machine["gpu"] = torch.cuda.get_device_name()
    return machine


def run_bench(
    steps: int = 200, threads: int = 2, warmup: int = 20, device: str = "cpu", shape: str = "tiny", int8: bool = False
) -> dict:
    if shape not in SHAPES:
        from kame_desktop.errors import KameError

        raise KameError(f"unknown --shape '{shape}'; use one of {', '.join(SHAPES)}")
    torch.set_num_threads(threads)
    if shape == "7b":
        if device in ("cpu", "meta") or (device == "auto" and not torch.cuda.is_available()):
            return plan_7b(int8=int8, steps=steps)
        from kame_desktop.models.compute import pick_device

        return run_7b(pick_device(device), frames=steps, int8=int8)
    return _run_tiny(steps, warmup, device)


def _guarded(device: torch.device, fn, *args):
    """One step under the engine's guard (step lock; no torch.compile off CUDA), so both
    variants are timed alike."""
    from kame_desktop.models.compute import streaming_step

    with torch.no_grad(), streaming_step(device):
        return fn(*args)


def _run_tiny(steps: int, warmup: int, device_name: str) -> dict:
    from moshi.models.lm import LMGen, LMModel

    from kame_desktop.frontend.kame import checkpoint as ckpt
    from kame_desktop.frontend.kame.engine import KameFrontEnd
    from kame_desktop.frontend.kame.model import KameLMGen
    from kame_desktop.frontend.kame.oracle import OracleStream
    from kame_desktop.frontend.kame.tiny import make_tiny_checkpoint
    from kame_desktop.models.compute import dtype_name, parse_dtype, pick_device

    device = pick_device(device_name)
    dtype = parse_dtype(None, device)
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_tiny_checkpoint(Path(tmp) / "bench", dim=BENCH_DIM, num_layers=BENCH_LAYERS)
        files = ckpt.resolve_checkpoint(str(folder))
        kame_lm = ckpt.load_lm(files, device, dtype)
        bare_lm = LMModel(device="meta", dtype=dtype, **files.lm_kwargs)
        state = ckpt.read_state_dict(files.lm_weights, device)
        del state["oracle_emb.weight"]
        bare_lm.load_state_dict({k: v.to(dtype) for k, v in state.items()}, assign=True)
        bare_lm.eval()
        frontend = KameFrontEnd.load(str(folder), device=str(device))

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
    codes = torch.from_numpy(rng.integers(0, kame_lm.card, size=(total, 1, n_user, 1))).to(device)

    kame_ms, bare_ms = [], []
    for i in range(total):
        a = lambda i=i: _guarded(device, kame_gen.step, codes[i])  # noqa: E731
        b = lambda i=i: _guarded(device, bare_gen.step, codes[i])  # noqa: E731
        if i % 2:
            ta, tb = _timed(a, device), _timed(b, device)
        else:
            tb, ta = _timed(b, device), _timed(a, device)
        if i >= warmup:
            kame_ms.append(ta)
            bare_ms.append(tb)

    mimi_ms, frame_ms = [], []
    pcm = torch.from_numpy(rng.standard_normal(FRAME_SIZE).astype(np.float32) * 0.1)[None, None].to(device)
    codec = lambda: frontend.mimi.decode(frontend.mimi.encode(pcm)[:, : frontend.lm.dep_q])  # noqa: E731
    for i in range(warmup + steps // 2):
        t = _timed(lambda: _guarded(device, codec), device)
        if i >= warmup:
            mimi_ms.append(t)
    frontend.reset()
    frame = pcm[0, 0].cpu().numpy()
    for i in range(warmup + steps // 2):
        t = _timed(lambda: frontend.step(frame), device)
        if i >= warmup:
            frame_ms.append(t)
    frontend.close()

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
        "threads": torch.get_num_threads(),
        "shape": "tiny",
        "device": str(device),
        "dtype": dtype_name(dtype),
        "lm": {"dim": BENCH_DIM, "num_layers": BENCH_LAYERS, "text_card": kame_lm.text_card},
        "machine": _machine(),
    }


# --- Moshi-7B shape --------------------------------------------------------------------------------


def tiny_tokenizer():
    import sentencepiece

    from kame_desktop.frontend.kame.tiny import train_tiny_tokenizer

    return sentencepiece.SentencePieceProcessor(model_proto=train_tiny_tokenizer())


def _randomize_(module: torch.nn.Module, seed: int = 0) -> None:
    """Random values for a module materialised with to_empty: matrices ~ N(0, 1/fan_in) (keeps
    activations bounded through 32 layers), vectors (norm scales) ones."""
    generator = torch.Generator(device=next(module.parameters()).device).manual_seed(seed)
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            if not tensor.dtype.is_floating_point:
                tensor.zero_()
            elif tensor.dim() >= 2:
                tensor.normal_(0.0, tensor.shape[-1] ** -0.5, generator=generator)
            else:
                tensor.fill_(1.0)


def random_7b_lm(device: torch.device, dtype: torch.dtype = torch.bfloat16, int8: bool = False, seed: int = 0):
    """KameLMModel with Moshi 7B's config and random weights on `device` (meta: shapes only).
    int8 quantizes the temporal layers with moshi's bitsandbytes path (CUDA)."""
    from kame_desktop.frontend.kame import checkpoint as ckpt

    lm = ckpt.build_lm(ckpt.moshi_7b_kwargs(), "meta", dtype)
    if device.type != "meta":
        lm = lm.to_empty(device=device)
        _randomize_(lm, seed)
        if int8:
            from moshi.utils import quantize

            for layer in lm.transformer.layers:
                quantize.replace_linear_with_qlinear(layer)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return lm.eval()


def full_mimi(device: torch.device, num_codebooks: int = 8):
    """Mimi with the released architecture and random weights."""
    from moshi.models.loaders import get_mimi

    torch.manual_seed(0)
    return get_mimi(None, device=device, num_codebooks=num_codebooks).eval()


def _quantiles(values: list[float]) -> dict[str, Any]:
    ordered = sorted(values)
    q = statistics.quantiles(ordered, n=100, method="inclusive") if len(ordered) > 1 else ordered * 99
    return {"p50_ms": round(q[49], 2), "p99_ms": round(q[98], 2), "max_ms": round(ordered[-1], 2), "frames": len(ordered)}


def plan_7b(int8: bool = False, steps: int = 200) -> dict:
    """The 7B run's shape check on the meta device, and what a GPU run would measure."""
    from kame_desktop.frontend.kame import checkpoint as ckpt

    lm = random_7b_lm(torch.device("meta"))
    mimi = full_mimi(torch.device("meta"), max(lm.dep_q, lm.n_q - lm.dep_q))
    tokenizer = tiny_tokenizer()
    parameters = sum(p.numel() for p in lm.parameters())
    estimate = ckpt.estimate_memory(ckpt.moshi_7b_kwargs(), torch.bfloat16, int8=int8)
    return {
        "shape": "7b",
        "device": "meta",
        "ran": False,
        "why": "a 7B step takes seconds on a CPU: only the shapes were built (use --device cuda)",
        "parameters": parameters,
        "parameters_ok": parameters == MOSHI_7B_PARAMETERS,
        "oracle_emb": list(lm.oracle_emb.weight.shape),
        "mimi_parameters": sum(p.numel() for p in mimi.parameters()),
        "tokenizer_pieces": tokenizer.vocab_size(),
        "int8": int8,
        "estimate_gb": round(estimate.total_bytes / 1e9, 2),
        "plan": [
            f"build: random Moshi-7B-shaped KameLMModel (bf16{', int8 layers' if int8 else ''}), full Mimi, tiny tokenizer",
            f"eager: warm-up, then {steps} frames (p50/p99 vs {FRAME_SECONDS * 1000:.0f} ms)",
            f"CUDA graphs: reset, capture, then {steps} frames (p50/p99)",
            f"peak memory vs the estimate ({estimate.total_bytes / 1e9:.1f} GB)",
        ],
        "budget_ms": FRAME_SECONDS * 1000,
        "machine": _machine(),
    }


def run_7b(
    device: torch.device,
    frames: int = 200,
    int8: bool = False,
    graphs: tuple[bool, ...] = (False, True),
    time_limit_s: float = 60.0,
    keep: bool = False,
) -> dict:
    """Build and time the 7B-shaped front-end on a GPU. Each timing phase stops early after
    `time_limit_s` (the frames actually timed are reported). `keep` returns the front-end under
    "frontend" (for a release check) instead of closing it."""
    from moshi.utils.compile import no_cuda_graph

    from kame_desktop.frontend.kame import checkpoint as ckpt
    from kame_desktop.frontend.kame.engine import KameFrontEnd
    from kame_desktop.models.compute import dtype_name, parse_dtype

    dtype = parse_dtype(None, device)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    lm = random_7b_lm(device, dtype, int8=int8)
    mimi = full_mimi(device, max(lm.dep_q, lm.n_q - lm.dep_q))
    build_s = time.perf_counter() - t0
    if cuda:  # building int8 passes through bf16: the run's peak is measured from here
        build_peak = torch.cuda.max_memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    estimate = ckpt.estimate_memory(ckpt.moshi_7b_kwargs(), dtype, int8=int8)
    result: dict[str, Any] = {
        "shape": "7b",
        "device": str(device),
        "dtype": dtype_name(dtype),
        "int8": int8,
        "ran": True,
        "build_s": round(build_s, 1),
        "estimate_gb": round(estimate.total_bytes / 1e9, 2),
        "budget_ms": FRAME_SECONDS * 1000,
        "oracle_emb_dtype": str(lm.oracle_emb.weight.dtype).removeprefix("torch."),
    }
    if cuda:
        result["weights_gb"] = round(torch.cuda.memory_allocated() / 1e9, 2)
        result["build_peak_gb"] = round(build_peak / 1e9, 2)
    rng = np.random.default_rng(0)
    pcm = [rng.standard_normal(FRAME_SIZE).astype(np.float32) * 0.1 for _ in range(16)]
    frontend: KameFrontEnd | None = None
    for graphed in graphs:
        with contextlib.ExitStack() as stack:
            if not graphed:
                stack.enter_context(no_cuda_graph())
            t0 = time.perf_counter()
            if frontend is None:  # built (and warmed up: 4 frames) in the first phase
                frontend = KameFrontEnd(lm, mimi, tiny_tokenizer(), model_name="random-7b", temperature=0)
            else:
                frontend.reset()
                for i in range(4):  # the first graphed calls run eagerly, then capture
                    frontend.step(pcm[i])
            _sync(device)
            warm_up_s = time.perf_counter() - t0
            times: list[float] = []
            deadline = time.perf_counter() + time_limit_s
            for i in range(frames):
                times.append(_timed(lambda fe=frontend, i=i: fe.step(pcm[i % len(pcm)]), device))
                if time.perf_counter() > deadline:
                    break
        stats = _quantiles(times)
        stats["warm_up_s"] = round(warm_up_s, 1)
        stats["within_budget"] = stats["p99_ms"] < FRAME_SECONDS * 1000
        result["graphed" if graphed else "eager"] = stats
    if cuda:
        peak = torch.cuda.max_memory_allocated()
        result["peak_gb"] = round(peak / 1e9, 2)
        result["peak_within_estimate"] = peak <= estimate.total_bytes
    result["machine"] = _machine()
    if keep:
        result["frontend"] = frontend
    elif frontend is not None:
        frontend.close()
    return result
