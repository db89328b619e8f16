"""Command line: `kame-desktop run`, `make-tiny-checkpoint`, `bench`.

Heavy modules (torch, moshi) are imported inside the commands so that `--help` stays fast.
A KameError is printed as one line on stderr with a non-zero exit, never as a traceback.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from kame_desktop.errors import KameError
from kame_desktop.evaluation.cli import app as eval_app  # typer only: its commands import lazily

app = typer.Typer(
    help="kame-desktop: a voice companion on KAME's tandem speech-to-speech architecture. "
    "Without a command it opens the desktop app.",
    add_completion=False,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(help="Benchmarks: logs on stderr, one JSON object as the last stdout line.")
app.add_typer(bench_app, name="bench")
app.add_typer(eval_app, name="eval")

log = logging.getLogger("kame_desktop")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.captureWarnings(True)  # checkpoint warnings (legacy file, no config) reach stderr


@app.callback(invoke_without_command=True)
def _main(
    ctx: typer.Context,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress on stderr.")] = False,
) -> None:
    _setup_logging(verbose)
    if ctx.invoked_subcommand is None:  # a double-click or a bare `kame-desktop`: the app
        gui()


@app.command()
def run(
    input: Annotated[Path, typer.Option("--input", "-i", help="Audio file to stream (WAV, FLAC, OGG).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the reply (24 kHz WAV).")],
    frontend: Annotated[
        str, typer.Option(help="auto (KAME where a GPU has room and the weights are here, else lite), kame or lite.")
    ] = "auto",
    checkpoint: Annotated[
        str | None, typer.Option(help="KAME checkpoint folder or Hugging Face repo id (means --frontend kame).")
    ] = None,
    timeline: Annotated[Path | None, typer.Option(help="Write every event as JSON lines here.")] = None,
    oracle_file: Annotated[
        Path | None, typer.Option(help='Scripted oracle: JSON list of {"t", "reset", "text", "tokens"}.')
    ] = None,
    tail: Annotated[float, typer.Option(help="Seconds of silence streamed after the input.")] = 5.0,
    llm: Annotated[
        str | None,
        typer.Option(help="Back-end LLM: local (embedded SmolLM2 or --llm-model GGUF) or openai. Lite defaults to local."),
    ] = None,
    llm_url: Annotated[str | None, typer.Option(help="OpenAI-compatible base URL (--llm openai).")] = None,
    llm_model: Annotated[str | None, typer.Option(help="Model name (openai) or GGUF path (local).")] = None,
    asr: Annotated[str, typer.Option(help="Speech recognition: whisper, openai or kyutai-stt.")] = "whisper",
    policy: Annotated[str, typer.Option(help="When to ask the LLM: reactive, polling or end_of_turn.")] = "reactive",
    realtime: Annotated[
        bool | None, typer.Option("--realtime/--no-realtime", help="Pace the input at real time (default: on with --llm).")
    ] = None,
    device: Annotated[str, typer.Option(help="auto (cuda > mps > cpu), cuda, mps or cpu.")] = "auto",
    dtype: Annotated[str | None, typer.Option(help="bf16, fp16 or fp32 (default: bf16 on GPU, fp32 on CPU).")] = None,
    int8: Annotated[bool, typer.Option("--int8", help="Quantize the LM to int8 (CUDA + bitsandbytes).")] = False,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature; 0 = greedy.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed for sampling.")] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads for the front-end (torch).")] = None,
    replay_stale_oracle: Annotated[
        bool, typer.Option(help="Reference quirk: keep the oracle run across a session reset.")
    ] = False,
) -> None:
    """Stream an audio file through the front-end (and the back-end with --llm); write the reply
    audio and the timeline. The API key of a cloud LLM comes from the keyring or KAME_LLM_API_KEY."""
    from kame_desktop.audio.files import read_audio
    from kame_desktop.audio.sources import FileSource, WavSink
    from kame_desktop.events import EventBus, TimelineWriter
    from kame_desktop.frontend.select import choose_frontend
    from kame_desktop.session import Session, check_script_tokens, load_oracle_script

    if tail < 0:
        raise KameError("--tail must be >= 0 seconds")
    pcm = read_audio(input)
    script = load_oracle_script(oracle_file) if oracle_file else []
    choice = choose_frontend(frontend, checkpoint, device)
    log.info("front-end: %s (%s)", choice.kind, choice.reason)
    if choice.kind == "lite" and llm is None:
        llm = "local"  # lite speaks the LLM's answers: it needs a back-end
    backend_settings = _backend_settings(llm, llm_url, llm_model, asr, policy)
    if choice.kind == "lite":
        from kame_desktop.frontend.lite.engine import LiteFrontEnd
        from kame_desktop.frontend.lite.tts import PiperTts

        fe = LiteFrontEnd(PiperTts(threads=1))
    else:
        import torch

        # With a back-end on 2 cores, ASR and LLM get their own thread each; torch takes one.
        torch.set_num_threads(threads or (1 if llm else torch.get_num_threads()))
        from kame_desktop.frontend.kame.engine import KameFrontEnd

        fe = KameFrontEnd.load(
            choice.checkpoint,
            device=device,
            dtype=dtype,
            int8=int8,
            temperature=temperature,
            seed=seed,
            replay_stale_oracle=replay_stale_oracle,
        )
        if oracle_file:
            check_script_tokens(script, fe.text_card, oracle_file)
    source = FileSource(pcm, tail, realtime=bool(llm) if realtime is None else realtime)
    for entry in script:
        if entry.frame >= source.frames_total:
            log.warning(
                "oracle entry for frame %d is past the end of the audio (%d frames): ignored", entry.frame, source.frames_total
            )

    bus = EventBus()
    writer = TimelineWriter(timeline) if timeline else None
    if writer:
        bus.subscribe(writer)
    session = Session(fe, bus)
    if backend_settings:
        from kame_desktop.backend.factory import make_backend

        session.backend = make_backend(backend_settings, session)
    sink = WavSink(output)
    try:
        session.run(source, sink, script)
    except BaseException:
        sink.abort()
        raise
    finally:
        if session.backend:
            session.backend.stop()
        fe.close()
        if writer:
            writer.close()
    sink.close()
    typer.echo(f"wrote {output} ({sink.frames_written} frames)" + (f" and {timeline}" if timeline else ""), err=True)


def _backend_settings(llm, llm_url, llm_model, asr, policy):
    from kame_desktop.backend.factory import ASR_KINDS, LLM_KINDS, BackendSettings
    from kame_desktop.backend.oracle_manager import POLICIES

    if llm is None:
        return None
    if llm not in LLM_KINDS:
        raise KameError(f"--llm must be one of {', '.join(LLM_KINDS)}")
    if asr not in ASR_KINDS:
        raise KameError(f"--asr must be one of {', '.join(ASR_KINDS)}")
    if policy not in POLICIES:
        raise KameError(f"--policy must be one of {', '.join(POLICIES)}")
    return BackendSettings(llm=llm, llm_url=llm_url, llm_model=llm_model, asr=asr, policy=policy)


@app.command()
def gui() -> None:
    """Open the desktop app (a second launch raises the running window)."""
    from kame_desktop.gui.app import main as gui_main

    raise typer.Exit(gui_main())


@app.command("make-tiny-checkpoint")
def make_tiny_checkpoint_cmd(
    folder: Annotated[Path, typer.Argument(help="Folder to write the checkpoint into.")],
    dim: Annotated[int, typer.Option(help="LM width.")] = 32,
    num_layers: Annotated[int, typer.Option(help="Temporal transformer layers.")] = 2,
    seed: Annotated[int, typer.Option(help="Seed of the random weights.")] = 0,
) -> None:
    """Write a random tiny KAME checkpoint in the released layout (runs in real time on a CPU)."""
    from kame_desktop.frontend.kame.tiny import make_tiny_checkpoint

    make_tiny_checkpoint(folder, dim=dim, num_layers=num_layers, seed=seed)
    typer.echo(f"wrote a tiny KAME checkpoint to {folder}", err=True)


@bench_app.command("frontend")
def bench_frontend(
    json_output: Annotated[bool, typer.Option("--json", help="Print only the JSON object on stdout.")] = False,
    steps: Annotated[int, typer.Option(help="Timed LM steps per variant (at least 200 for the report).")] = 200,
    threads: Annotated[int, typer.Option(help="CPU threads for torch.")] = 2,
) -> None:
    """Overhead of the oracle path: our engine's LM step vs a bare moshi LMGen step."""
    from kame_desktop.bench.frontend import run_bench

    _print_bench(run_bench(steps=steps, threads=threads), json_output)


@bench_app.command("oracle-lag")
def bench_oracle_lag(
    json_output: Annotated[bool, typer.Option("--json", help="Print only the JSON object on stdout.")] = False,
    questions: Annotated[int, typer.Option(help="How many espeak-ng questions (each runs once per policy).")] = 6,
    threads: Annotated[int, typer.Option(help="Threads for each of torch, whisper and llama.cpp.")] = 1,
) -> None:
    """Oracle lag (end of a user word → first oracle token that includes it): reactive vs polling."""
    from kame_desktop.bench.oracle_lag import run_bench

    _print_bench(run_bench(questions=questions, threads=threads), json_output)


@bench_app.command("lite")
def bench_lite(
    json_output: Annotated[bool, typer.Option("--json", help="Print only the JSON object on stdout.")] = False,
    questions: Annotated[int, typer.Option(help="How many espeak-ng questions (each runs with and without speculation).")] = 10,
) -> None:
    """Lite front-end response latency (end of user speech → first answer sample), speculative vs not."""
    from kame_desktop.bench.lite import run_bench

    _print_bench(run_bench(questions=questions), json_output)


def _print_bench(result: dict, json_output: bool) -> None:
    import json

    if not json_output:
        for key, value in result.items():
            typer.echo(f"{key:>30}: {value}", err=True)
    typer.echo(json.dumps(result))


def main() -> None:
    try:
        app()
    except KameError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
