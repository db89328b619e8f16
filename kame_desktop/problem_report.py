"""*Report a problem*: one zip with the doctor report and the log files, for the user to attach
to a bug report. Nothing private goes in: the API key (and fragments of it) is redacted again,
and every transcript record (logs.TRANSCRIPT_LOGGER, written only at DEBUG with history on) is
left out, whatever the log holds."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

from kame_desktop.credentials import KeyRedactor, llm_api_key
from kame_desktop.doctor import Check, render_json, render_text
from kame_desktop.fileio import atomic_writer
from kame_desktop.logs import LOG_FILE, TRANSCRIPT_LOGGER, log_dir

# A record starts with the asctime of logs.FORMAT; the lines after it (a traceback, a
# multi-line message) belong to it.
_RECORD_START = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ (\S+): ", re.MULTILINE)


def without_transcripts(text: str) -> str:
    """`text` (a log file) minus every record of the transcript logger, continuation lines too."""
    starts = [m.start() for m in _RECORD_START.finditer(text)]
    if not starts:
        return text
    kept = [text[: starts[0]]]
    for start, end in zip(starts, [*starts[1:], len(text)], strict=True):
        record = text[start:end]
        if _RECORD_START.match(record).group(1) != TRANSCRIPT_LOGGER:
            kept.append(record)
    return "".join(kept)


def write_problem_report(dest: Path, checks: list[Check], logs: Path | None = None) -> Path:
    """Write the zip to `dest` (atomically) and return it."""
    folder = log_dir() if logs is None else logs
    redact = KeyRedactor(llm_api_key())
    files = {"doctor.txt": render_text(checks), "doctor.json": render_json(checks)}
    for path in sorted(folder.glob(f"{LOG_FILE}*")):  # kame-desktop.log and its rotated .1 .. .3
        files[path.name] = without_transcripts(path.read_text(encoding="utf-8", errors="replace"))
    with atomic_writer(dest, mode=0o600) as f, zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, text in files.items():
            zf.writestr(name, redact(text))
    return dest
