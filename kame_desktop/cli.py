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

app = typer.Typer(
    help="kame-desktop: a voice companion on KAME's tandem speech-to-speech architecture.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(help="Benchmarks: logs on stderr, one JSON object as the last stdout line.")
app.add_typer(bench_app, name="bench")

log = logging.getLogger("kame_desktop")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.captureWarnings(True)  # checkpoint warnings (legacy file, no config) reach stderr


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress on stderr.")] = False) -> None:
    _setup_logging(verbose)


@app.command()
def run(
    checkpoint: Annotated[str, typer.Option(help="KAME checkpoint folder or Hugging Face repo id.")],
    input: Annotated[Path, typer.Option("--input", "-i", help="Audio file to stream (WAV, FLAC, OGG).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the reply (24 kHz WAV).")],
    timeline: Annotated[Path | None, typer.Option(help="Write every event as JSON lines here.")] = None,
    oracle_file: Annotated[
        Path | None, typer.Option(help='Scripted oracle: JSON list of {"t", "reset", "text", "tokens"}.')
    ] = None,
    tail: Annotated[float, typer.Option(help="Seconds of silence streamed after the input.")] = 5.0,
    device: Annotated[str, typer.Option(help="auto (cuda > mps > cpu), cuda, mps or cpu.")] = "auto",
    dtype: Annotated[str | None, typer.Option(help="bf16, fp16 or fp32 (default: bf16 on GPU, fp32 on CPU).")] = None,
    int8: Annotated[bool, typer.Option("--int8", help="Quantize the LM to int8 (CUDA + bitsandbytes).")] = False,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature; 0 = greedy.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed for sampling.")] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads for torch.")] = None,
    replay_stale_oracle: Annotated[
        bool, typer.Option(help="Reference quirk: keep the oracle run across a session reset.")
    ] = False,
) -> None:
    """Stream an audio file through the front-end and write the reply audio and the timeline."""
    from kame_desktop.audio.files import frames, read_audio, write_wav
    from kame_desktop.events import FRAME_SIZE, EventBus, TimelineWriter
    from kame_desktop.session import Session, check_script_tokens, load_oracle_script

    if tail < 0:
        raise KameError("--tail must be >= 0 seconds")
    pcm = read_audio(input)
    script = load_oracle_script(oracle_file) if oracle_file else []
    if threads:
        import torch

        torch.set_num_threads(threads)
    from kame_desktop.frontend.kame.engine import KameFrontEnd

    frontend = KameFrontEnd.load(
        checkpoint,
        device=device,
        dtype=dtype,
        int8=int8,
        temperature=temperature,
        seed=seed,
        replay_stale_oracle=replay_stale_oracle,
    )
    if oracle_file:
        check_script_tokens(script, frontend.text_card, oracle_file)
    chunks = list(frames(pcm, FRAME_SIZE, tail))
    for entry in script:
        if entry.frame >= len(chunks):
            log.warning("oracle entry for frame %d is past the end of the audio (%d frames): ignored", entry.frame, len(chunks))

    bus = EventBus()
    writer = TimelineWriter(timeline) if timeline else None
    if writer:
        bus.subscribe(writer)
    out: list = []
    try:
        Session(frontend, bus).run(chunks, out.append, script)
    finally:
        if writer:
            writer.close()
    import numpy as np

    write_wav(output, np.concatenate(out))
    typer.echo(f"wrote {output} ({len(out)} frames)" + (f" and {timeline}" if timeline else ""), err=True)


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
    import json

    from kame_desktop.bench.frontend import run_bench

    result = run_bench(steps=steps, threads=threads)
    if not json_output:
        for key, value in result.items():
            typer.echo(f"{key:>16}: {value}", err=True)
    typer.echo(json.dumps(result))


def main() -> None:
    try:
        app()
    except KameError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
