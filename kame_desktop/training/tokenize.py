"""`train tokenize DATA --checkpoint CKPT`: Mimi codes, frame-aligned text and oracle events for
every dialogue (spec §4.3–4.5), then Parquet shards (spec §4.6).

Per dialogue the result goes to `tokenized/<id>.npz` together with a digest of its inputs (audio,
transcript, oracle file) and of the checkpoint's tokenizer and codec: a rerun encodes only what
changed. Shards are rebuilt from those files at the end of every run (cheap), written atomically,
and carry the stream layout in their metadata so that finetune can check it against its model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kame_desktop.errors import TrainingDataError
from kame_desktop.fileio import atomic_writer, sha256_file
from kame_desktop.training.layout import (
    SPEAKERS,
    audio_path,
    dialogue_ids,
    oracle_path,
    read_json,
    text_path,
    validate_dialogue,
)
from kame_desktop.training.progress import StepProgress, StepReport
from kame_desktop.training.streams import FRAME_RATE, FRAME_SIZE, SAMPLE_RATE, StreamLayout
from kame_desktop.training.text_align import (
    OracleArrays,
    SentencePieceTokenizer,
    align_text,
    fit_length,
    tokenize_oracle,
)

log = logging.getLogger(__name__)

TOKENIZED_DIR = "tokenized"
SHARDS_DIR = "shards"
SHARD_META_KEY = b"kame_stream_layout"
DIALOGUES_PER_SHARD = 100_000
CHUNK_S = 1200  # Mimi encodes long dialogues in pieces this long (a multiple of the frame)


@dataclass(frozen=True)
class TokenizeSettings:
    checkpoint: str
    use_oracle: bool = True
    prefix: str | None = None  # dialogue_id prefix; default: the data folder's name
    shards: Path | None = None  # default DATA/shards
    dialogues_per_shard: int = DIALOGUES_PER_SHARD
    strict_text: bool = True  # alignment problems and tokens past the end fail the dialogue
    device: str = "cpu"
    force: bool = False


class Target:
    """What the checkpoint brings to tokenization: tokenizer, Mimi and the stream layout."""

    def __init__(self, checkpoint: str, device: str = "cpu") -> None:
        import torch

        from kame_desktop.frontend.kame.checkpoint import load_tokenizer, resolve_checkpoint

        self.files = resolve_checkpoint(checkpoint)
        self.layout = StreamLayout.from_lm_kwargs(self.files.lm_kwargs)
        self.sp = load_tokenizer(self.files)
        self.tokenizer = SentencePieceTokenizer(self.sp)
        self.newline_id = self.tokenizer.newline_id()
        self.device = torch.device(device)
        self._mimi = None
        self.digest = hashlib.sha256(
            json.dumps([self.layout.to_json(), sha256_file(self.files.tokenizer), sha256_file(self.files.mimi_weights),
                        self.files.mimi_config]).encode()
        ).hexdigest()[:16]

    @property
    def mimi(self):
        if self._mimi is None:
            from kame_desktop.frontend.kame.checkpoint import load_mimi

            self._mimi = load_mimi(self.files, self.device)
            if self._mimi.frame_rate != FRAME_RATE or self._mimi.sample_rate != SAMPLE_RATE:
                raise TrainingDataError(
                    f"{self.files.source}: Mimi runs at {self._mimi.sample_rate} Hz / {self._mimi.frame_rate} fps; "
                    f"training expects {SAMPLE_RATE} Hz / {FRAME_RATE} fps"
                )
        return self._mimi

    def encode_audio(self, stereo: np.ndarray, rate: int) -> np.ndarray:
        """[2, num_codebooks, T] int64 codes of the two channels, T = ceil(samples_24k / 1920)."""
        import soxr
        import torch
        from moshi.utils.compile import no_compile

        channels = [soxr.resample(stereo[:, c], rate, SAMPLE_RATE) if rate != SAMPLE_RATE else stereo[:, c]
                    for c in range(2)]
        n = len(channels[0])
        frames = math.ceil(n / FRAME_SIZE)
        pcm = np.zeros((2, 1, frames * FRAME_SIZE), dtype=np.float32)
        for c in range(2):
            pcm[c, 0, :n] = channels[c]
        chunk = CHUNK_S * SAMPLE_RATE
        codes = []
        with torch.no_grad(), no_compile():  # every dialogue has its own length: no per-shape compiles
            for start in range(0, pcm.shape[-1], chunk):
                x = torch.from_numpy(pcm[:, :, start : start + chunk]).to(self.device)
                codes.append(self.mimi.encode(x).cpu().numpy())
        out = np.concatenate(codes, axis=-1).astype(np.int64)
        if out.shape != (2, self.layout.num_codebooks, frames):
            raise TrainingDataError(f"Mimi returned codes of shape {out.shape}, expected {(2, self.layout.num_codebooks, frames)}")
        return out


def _inputs_digest(data: Path, dialogue: str, target: Target, use_oracle: bool) -> str:
    h = hashlib.sha256(target.digest.encode())
    for path in (audio_path(data, dialogue), text_path(data, dialogue)) + ((oracle_path(data, dialogue),) if use_oracle else ()):
        h.update(path.name.encode())
        h.update(sha256_file(path).encode())
    return h.hexdigest()


def tokenize_dialogue(data: Path, dialogue: str, target: Target, settings: TokenizeSettings) -> dict[str, np.ndarray]:
    """The npz arrays of one dialogue: {S}_text [T], {S}_audio [num_codebooks, T], oracle keys."""
    import soundfile as sf

    layout = target.layout
    _info, words = validate_dialogue(data, dialogue)
    records = None
    if settings.use_oracle:
        if not oracle_path(data, dialogue).exists():
            raise TrainingDataError(f"no oracle events ({oracle_path(data, dialogue)}); run simulate-oracle first")
        records = read_json(oracle_path(data, dialogue))
    stereo, rate = sf.read(str(audio_path(data, dialogue)), dtype="float32", always_2d=True)
    codes = target.encode_audio(stereo, rate)
    n_frames = codes.shape[-1]
    out: dict[str, np.ndarray] = {}
    for c, speaker in enumerate(SPEAKERS):
        row = align_text(
            [w for w in words if w.speaker == speaker], target.tokenizer, layout.pad_id, layout.epad_id,
            strict=settings.strict_text, where=f"{text_path(data, dialogue)} speaker {speaker}",
        )
        out[f"{speaker}_text"] = fit_length(row, n_frames, layout.pad_id).astype(np.int32)
        out[f"{speaker}_audio"] = codes[c].astype(np.int32)
        if records is not None:
            arrays, outside = tokenize_oracle(
                records, c, n_frames, target.tokenizer, target.newline_id, where=str(oracle_path(data, dialogue))
            )
            if outside:
                log.warning("%s: %d oracle event(s) for %s outside the audio, dropped", dialogue, outside, speaker)
            for key, value in arrays.arrays().items():
                out[f"{speaker}_{key}"] = value
    return out


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_writer(path) as f:
        np.savez(f, **arrays)


def _load_npz(path: Path) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError):
        return None


def tokenize(data: Path, settings: TokenizeSettings, show_progress: bool = True) -> StepReport:
    ids = dialogue_ids(data)
    if not ids:
        raise TrainingDataError(f"{data}: no transcripts under {data / 'text'}; run `kame-desktop train prepare` first")
    target = Target(settings.checkpoint, settings.device)
    report = StepReport("tokenize")
    out_dir = data / TOKENIZED_DIR
    ready: list[str] = []
    with StepProgress(report, len(ids), show_progress) as progress:
        for dialogue in ids:
            with progress.dialogue(dialogue):
                npz = out_dir / f"{dialogue}.npz"
                digest = _inputs_digest(data, dialogue, target, settings.use_oracle) if _inputs_exist(
                    data, dialogue, settings.use_oracle) else ""
                old = _load_npz(npz) if npz.exists() and not settings.force else None
                if old is not None and digest and str(old.get("inputs_digest")) == digest:
                    report.skipped += 1
                    ready.append(dialogue)
                    continue
                arrays = tokenize_dialogue(data, dialogue, target, settings)
                arrays["inputs_digest"] = np.array(digest)
                _save_npz(npz, arrays)
                report.done += 1
                ready.append(dialogue)
    shards = write_shards(data, ready, target.layout, settings)
    report.count("shards", len(shards))
    return report


def _inputs_exist(data: Path, dialogue: str, use_oracle: bool) -> bool:
    paths = [audio_path(data, dialogue), text_path(data, dialogue)] + ([oracle_path(data, dialogue)] if use_oracle else [])
    return all(p.exists() for p in paths)


# --- Parquet (spec §4.6) ------------------------------------------------------------------------


def _row(prefix: str, dialogue: str, arrays: dict[str, np.ndarray], use_oracle: bool) -> dict[str, Any]:
    row: dict[str, Any] = {"dialogue_id": f"{prefix}/{dialogue}"}
    for s in SPEAKERS:
        row[s] = [arrays[f"{s}_text"].tolist()] + [list(r) for r in arrays[f"{s}_audio"].tolist()]
        if use_oracle:
            for key in OracleArrays.FIELDS:
                row[f"{s}_oracle_{key}"] = arrays[f"{s}_{key}"].tolist()
            use_hint = arrays.get(f"{s}_{OracleArrays.USE_HINT}")  # absent: unspecified (null)
            row[f"{s}_oracle_{OracleArrays.USE_HINT}"] = None if use_hint is None else use_hint.tolist()
    return row


def shard_schema(use_oracle: bool, layout: StreamLayout):
    import pyarrow as pa

    fields = [pa.field("dialogue_id", pa.string())]
    for s in SPEAKERS:
        fields.append(pa.field(s, pa.list_(pa.list_(pa.int32()))))
        if use_oracle:
            types = {"event_frame_pos": pa.int32(), "event_ratio": pa.float32(), "event_skip_forbid": pa.int8()}
            for key in OracleArrays.FIELDS:
                fields.append(pa.field(f"{s}_oracle_{key}", pa.list_(types.get(key, pa.int32()))))
            fields.append(pa.field(f"{s}_oracle_{OracleArrays.USE_HINT}", pa.list_(pa.int8()), nullable=True))
    meta = {SHARD_META_KEY: json.dumps({**layout.to_json(), "frame_rate": FRAME_RATE, "oracle": use_oracle}).encode()}
    return pa.schema(fields, metadata=meta)


def write_shards(data: Path, dialogues: list[str], layout: StreamLayout, settings: TokenizeSettings) -> list[Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    shard_dir = settings.shards or data / SHARDS_DIR
    shard_dir.mkdir(parents=True, exist_ok=True)
    prefix = settings.prefix or data.resolve().name
    per = max(1, settings.dialogues_per_shard)
    count = max(1, math.ceil(len(dialogues) / per))
    schema = shard_schema(settings.use_oracle, layout)
    written = []
    for i in range(count if dialogues else 0):
        rows = []
        for dialogue in dialogues[i * per : (i + 1) * per]:
            arrays = _load_npz(data / TOKENIZED_DIR / f"{dialogue}.npz")
            if arrays is None:
                raise TrainingDataError(f"{data / TOKENIZED_DIR / dialogue}.npz vanished or is damaged; rerun tokenize")
            rows.append(_row(prefix, dialogue, arrays, settings.use_oracle))
        path = shard_dir / f"{prefix}-{i:03d}-of-{count:03d}.parquet"
        with atomic_writer(path) as f:
            pq.write_table(pa.Table.from_pylist(rows, schema=schema), f)
        written.append(path)
    for stale in shard_dir.glob(f"{prefix}-*-of-*.parquet"):  # a previous run with another count
        if stale not in written:
            stale.unlink()
    return written


def read_shard_layout(path: Path) -> dict[str, Any]:
    import pyarrow.parquet as pq

    meta = pq.read_schema(path).metadata or {}
    if SHARD_META_KEY not in meta:
        raise TrainingDataError(f"{path}: not a kame-desktop training shard (no stream layout in its metadata)")
    return json.loads(meta[SHARD_META_KEY])
