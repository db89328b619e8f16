"""The log file: rotating, in the log folder, the API key redacted from every line; what was
said only at DEBUG, and only from sessions that keep history."""

from __future__ import annotations

import logging
import sys

import pytest
from fixtures.disk import fill, small_disk

from kame_desktop.credentials import store_api_key
from kame_desktop.events import AsrFinalEvent, AssistantTokenEvent, SpeechEndEvent, Stamped
from kame_desktop.logs import LOG_FILE, MAX_BYTES, TRANSCRIPT_LOGGER, TranscriptLog, add_file_log, log_dir

KEY = "sk-proj-logsTESTkey0123456789abcdef"


@pytest.fixture
def file_log(isolated):
    handlers = []

    def add(level: int) -> logging.Handler:
        handler = add_file_log(level)
        handlers.append(handler)
        return handler

    root_level = logging.getLogger().level
    yield add
    for handler in handlers:
        logging.getLogger().removeHandler(handler)
        handler.close()
    logging.getLogger().setLevel(root_level)


def say(log: TranscriptLog) -> None:
    for event in (AsrFinalEvent("what is my password"), AssistantTokenEvent(0, "It is "),
                  AssistantTokenEvent(1, "private."), SpeechEndEvent("assistant")):
        log(Stamped(0, event))


def test_the_key_never_reaches_the_file_whole_or_cut(file_log):
    store_api_key(KEY)
    handler = file_log(logging.INFO)
    log = logging.getLogger("kame_desktop.test")
    log.warning("server said: bad key %s", KEY)
    try:
        raise ValueError(f"echo {KEY[:20]}")
    except ValueError:
        log.exception("failed")
    handler.flush()
    text = (log_dir() / LOG_FILE).read_text()
    assert "server said: bad key ***" in text and "Traceback" in text
    assert KEY[8:20] not in text
    assert handler.maxBytes == MAX_BYTES and handler.backupCount > 0


def test_transcripts_only_at_debug(file_log):
    info = file_log(logging.INFO)
    say(TranscriptLog())
    info.flush()
    path = log_dir() / LOG_FILE
    assert not path.exists() or "password" not in path.read_text()

    debug = file_log(logging.DEBUG)
    say(TranscriptLog())
    debug.flush()
    text = (log_dir() / LOG_FILE).read_text()
    assert f"{TRANSCRIPT_LOGGER}: user: what is my password" in text
    assert f"{TRANSCRIPT_LOGGER}: assistant: It is private." in text


@pytest.mark.parametrize("history", [True, False])
def test_a_session_logs_transcripts_only_with_history_on(history):
    import dataclasses

    from kame_desktop.assembly import build_session
    from kame_desktop.config import Settings
    from kame_desktop.logs import TranscriptLog as Kind

    class Front:
        kind = "lite"

        def reset(self) -> None:
            pass

        def close(self) -> None:
            pass

    settings = dataclasses.replace(Settings(), history=history)
    session = build_session(settings, frontend=Front(), backend=lambda *a: None)
    try:
        assert any(isinstance(s, Kind) for s in session.bus._subscribers) == history
    finally:
        session.close()


def test_a_full_log_disk_is_said_once_and_warnings_still_reach_stderr(isolated, capsys):
    root, level = logging.getLogger(), logging.getLogger().level
    with small_disk(log_dir()) as disk:
        fill(disk)
        stderr = logging.StreamHandler(sys.stderr)  # as the CLI sets it up: warnings and up
        stderr.setLevel(logging.WARNING)
        root.addHandler(stderr)
        handler = add_file_log(logging.INFO)
        try:
            log = logging.getLogger("kame_desktop.test")
            for n in range(6):
                log.info("step %d", n)
            log.warning("the LLM is slow")
            log.info("step 7")
            log.error("the LLM failed")
        finally:
            for h in (stderr, handler):
                root.removeHandler(h)
                h.close()
            root.setLevel(level)
    err = capsys.readouterr().err
    assert "Logging error" not in err and "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 3, err
    assert "cannot write the log file" in lines[0] and str(disk / LOG_FILE) in lines[0]
    assert "No space left on device" in lines[0]
    assert lines[1:] == ["the LLM is slow", "the LLM failed"]
