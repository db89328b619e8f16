"""Report a problem: the zip holds the doctor report and the log, never the API key (nor a
fragment of it) and never a transcript record, even one the log holds."""

from __future__ import annotations

import zipfile

from kame_desktop.credentials import store_api_key
from kame_desktop.doctor import Check
from kame_desktop.logs import LOG_FILE, TRANSCRIPT_LOGGER, log_dir
from kame_desktop.problem_report import write_problem_report

KEY = "sk-proj-reportTESTkey0123456789abcdef"


def test_the_zip_has_the_report_and_log_but_no_secret_and_no_transcript(isolated):
    store_api_key(KEY)
    logs = log_dir()
    logs.mkdir(parents=True)
    (logs / LOG_FILE).write_text(
        "2026-12-02 00:10:00,001 INFO kame_desktop.assembly: front-end: lite (no GPU)\n"
        f"2026-12-02 00:10:01,002 DEBUG {TRANSCRIPT_LOGGER}: user: my bank PIN is 4321\n"
        f"2026-12-02 00:10:02,003 DEBUG {TRANSCRIPT_LOGGER}: assistant: first line of the reply\n"
        "and its second line\n"
        f"2026-12-02 00:10:03,004 ERROR kame_desktop.backend: the server echoed {KEY[:-3]} back\n"
        "Traceback (most recent call last):\n  ValueError: boom\n"
    )
    (logs / f"{LOG_FILE}.1").write_text(f"2026-12-01 23:00:00,000 WARNING kame_desktop.x: older, key={KEY}\n")
    checks = [Check("llm", "warn", "https://api.example/v1 refused the API key (HTTP 401)", "enter the key")]
    path = write_problem_report(isolated / "report.zip", checks)

    with zipfile.ZipFile(path) as zf:
        files = {name: zf.read(name).decode() for name in zf.namelist()}
    assert set(files) == {"doctor.txt", "doctor.json", LOG_FILE, f"{LOG_FILE}.1"}
    assert "refused the API key" in files["doctor.txt"] and '"exit_code": 1' in files["doctor.json"]
    everything = "".join(files.values())
    assert "front-end: lite" in files[LOG_FILE] and "ValueError: boom" in files[LOG_FILE]
    assert "older" in files[f"{LOG_FILE}.1"]
    assert KEY[8:24] not in everything and "***" in files[LOG_FILE]
    assert "PIN" not in everything and "reply" not in everything and "second line" not in everything
    assert TRANSCRIPT_LOGGER not in everything
    assert path.stat().st_mode & 0o077 == 0  # only the user can read it until they send it


def test_a_log_without_records_is_kept_as_it_is(isolated):
    logs = log_dir()
    logs.mkdir(parents=True)
    (logs / LOG_FILE).write_text("no timestamps here\n")
    with zipfile.ZipFile(write_problem_report(isolated / "r.zip", [])) as zf:
        assert zf.read(LOG_FILE).decode() == "no timestamps here\n"
