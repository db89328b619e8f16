"""Settings → Tools → MCP servers: a server is added, its Test starts the real test server and lists
its tools (read-only or not, each one can be switched off), it is off until ticked, and an HTTP
server's token goes to the keyring, never into settings.toml, and is never shown back."""

from __future__ import annotations

import shlex
import sys

import pytest
from fixtures.mcp_servers import MCP_SERVER, MCP_START_S, MCP_TOKEN
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialogButtonBox

from kame_desktop.config import McpServerSettings, Settings, ToolSettings, load_settings, settings_path
from kame_desktop.credentials import mcp_token

pytestmark = pytest.mark.gui

OK = QDialogButtonBox.StandardButton.Ok


def open_dialog(qtbot, settings: Settings):
    from kame_desktop.gui.settings_dialog import SettingsDialog

    dialog = SettingsDialog(settings)
    qtbot.addWidget(dialog)
    dialog.show()
    return dialog


def listed_by_test(qtbot, editor) -> list[str]:
    qtbot.mouseClick(editor.test_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: editor.test_button.isEnabled(), timeout=int(MCP_START_S * 1000))
    return [editor.tool_list.item(i).text() for i in range(editor.tool_list.count())]


def test_a_stdio_server_is_tested_its_tools_listed_and_one_switched_off(qtbot, tmp_path):
    dialog = open_dialog(qtbot, Settings(tools=ToolSettings(enabled=True)))
    qtbot.mouseClick(dialog.mcp.add_button, Qt.MouseButton.LeftButton)
    editor = dialog.mcp.editor
    editor.name.setText("diary")
    editor.command.setText(sys.executable)
    editor.args.setText(shlex.join([str(MCP_SERVER), "--state", str(tmp_path / "state")]))
    listed = listed_by_test(qtbot, editor)
    assert editor.test_result.text() == "It works: 4 tools.", editor.problem.text()
    assert listed[0] == "lookup (read-only) — The meaning of a Japanese word in the test dictionary."
    assert listed[1] == "add_entry (changes something: only once you have finished) — Add an entry to the user's diary."
    editor.tool_list.item(1).setCheckState(Qt.CheckState.Unchecked)
    qtbot.mouseClick(editor.buttons.button(OK), Qt.MouseButton.LeftButton)

    item = dialog.mcp.list.item(0)
    assert item.text() == "diary — stdio: python" and item.checkState() == Qt.CheckState.Unchecked  # off until ticked
    item.setCheckState(Qt.CheckState.Checked)
    qtbot.mouseClick(dialog.buttons.button(OK), Qt.MouseButton.LeftButton)
    server = McpServerSettings(name="diary", enabled=True, command=sys.executable,
                               args=(str(MCP_SERVER), "--state", str(tmp_path / "state")))
    assert load_settings().tools == ToolSettings(enabled=True, disabled=("diary.add_entry",), mcp=(server,))

    again = open_dialog(qtbot, load_settings())  # reopened: the same, and the switch stays off
    again.mcp.list.setCurrentRow(0)
    qtbot.mouseClick(again.mcp.edit_button, Qt.MouseButton.LeftButton)
    assert [again.mcp.editor.args.text(), listed_by_test(qtbot, again.mcp.editor)[1][:9]] == [
        shlex.join(server.args), "add_entry"]
    assert again.mcp.editor.tool_list.item(1).checkState() == Qt.CheckState.Unchecked
    assert again.values().tools == load_settings().tools


def test_an_http_servers_token_goes_to_the_keyring_and_a_wrong_one_is_said(qtbot, mcp_http_server):
    server, _ = mcp_http_server
    dialog = open_dialog(qtbot, Settings(tools=ToolSettings(enabled=True)))
    qtbot.mouseClick(dialog.mcp.add_button, Qt.MouseButton.LeftButton)
    editor = dialog.mcp.editor
    editor.name.setText("web")
    editor.transport.setCurrentText("http")
    assert not editor.command.isEnabled() and editor.token.isEnabled()
    editor.url.setText(server.url)
    editor.token.setText("wrong-token-6d2e")
    assert listed_by_test(qtbot, editor) == []
    assert editor.problem.text() == ("Test failed: the server refused the token (HTTP 401) — set it in "
                                     "Settings → Tools")
    editor.token.setText(MCP_TOKEN)
    assert len(listed_by_test(qtbot, editor)) == 4 and not editor.problem.isVisible()
    qtbot.mouseClick(editor.buttons.button(OK), Qt.MouseButton.LeftButton)
    qtbot.mouseClick(dialog.buttons.button(OK), Qt.MouseButton.LeftButton)

    assert mcp_token("web") == MCP_TOKEN
    assert load_settings().tools.mcp == (McpServerSettings(name="web", transport="http", url=server.url),)
    assert MCP_TOKEN not in settings_path().read_text()
    again = open_dialog(qtbot, load_settings())
    again.mcp.list.setCurrentRow(0)
    qtbot.mouseClick(again.mcp.edit_button, Qt.MouseButton.LeftButton)
    assert again.mcp.editor.token.text() == "" and again.mcp.editor.token.placeholderText() == "stored — type to replace"
    assert len(listed_by_test(qtbot, again.mcp.editor)) == 4  # with the stored token

    # Removed: its token leaves the keyring too.
    qtbot.mouseClick(again.mcp.editor.buttons.button(OK), Qt.MouseButton.LeftButton)
    qtbot.mouseClick(again.mcp.remove_button, Qt.MouseButton.LeftButton)
    qtbot.mouseClick(again.buttons.button(OK), Qt.MouseButton.LeftButton)
    assert load_settings().tools.mcp == () and mcp_token("web") is None


def test_a_bad_server_is_refused_where_it_is_typed(qtbot):
    dialog = open_dialog(qtbot, Settings(tools=ToolSettings(enabled=True, mcp=(McpServerSettings(name="cal"),))))
    qtbot.mouseClick(dialog.mcp.add_button, Qt.MouseButton.LeftButton)
    editor = dialog.mcp.editor
    for name, command, problem in [
        ("cal", "x", "there is already a server named cal"),
        ("my calendar", "x", "an MCP server's name is 1 to 32 letters, digits, - or _ (its tools are offered as name.tool)"),
        ("files", "", "MCP server files: the command is empty — type the program that starts it"),
    ]:
        editor.name.setText(name)
        editor.command.setText(command)
        qtbot.mouseClick(editor.buttons.button(OK), Qt.MouseButton.LeftButton)
        assert editor.isVisible() and editor.problem.text() == problem
    editor.reject()
    assert dialog.mcp.list.count() == 1


def window_with_servers(make_window, qtbot, parts, settings):
    """The main window with a real back-end whose tools are `settings`' (no LLM), once it runs."""
    from kame_desktop.audio.sources import NullSource
    from kame_desktop.backend.factory import make_memory_and_tools
    from kame_desktop.backend.llm.base import UnavailableLlm
    from kame_desktop.backend.worker import Backend

    backends = []

    def backend(_settings, post_signal, publish):
        _, tools = make_memory_and_tools(settings)
        backends.append(Backend(UnavailableLlm("none", "test"), None, post_signal, publish, tools=tools))
        return backends[-1]

    window = make_window(settings, frontend_factory=lambda _s: parts.RecordingFrontEnd(),
                         audio_factory=parts.audio(lambda: NullSource(None, realtime=True)), backend_factory=backend)
    qtbot.waitUntil(lambda: bool(backends), timeout=int(MCP_START_S * 1000))
    return window, backends


def test_closing_the_app_ends_every_server_it_started(make_window, qtbot, parts, tmp_path):
    """The app's own way out (the window closes, then gui.app.main waits for the session as it
    does after app.exec()): the stdio server the session started is gone. It runs in a session of
    its own (the SDK starts it so), so Ctrl+C at a terminal never reaches it: only the app ends it."""
    import psutil
    from fixtures.mcp_servers import stdio_mcp_server

    from kame_desktop.backend.tools.mcp_servers import wait_for_tools
    from kame_desktop.config import MemorySettings

    state = tmp_path / "state"
    settings = Settings(tools=ToolSettings(enabled=True, mcp=(stdio_mcp_server(state),)), memory=MemorySettings(enabled=False))
    window, backends = window_with_servers(make_window, qtbot, parts, settings)
    assert wait_for_tools(backends[0].tools.servers, ["test.lookup"], MCP_START_S)
    pids = [int(p.name[4:]) for p in state.glob("pid-*")]
    assert pids and psutil.Process(pids[-1]).is_running()
    window.close()
    window.controller.stop(join_timeout=15)  # as gui.app.main does once the event loop has ended

    def alive(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    assert not [pid for pid in pids if alive(pid)]


def test_the_banner_of_a_server_that_stopped_goes_once_it_is_back(make_window, qtbot, parts, tmp_path, monkeypatch):
    """Killed mid-session: the banner says it stopped and that its tools are off until it is back;
    once it is back that is no longer true, so the banner goes (a later, other trouble would stay)."""
    import os
    import signal

    from fixtures.mcp_servers import stdio_mcp_server

    from kame_desktop.backend.tools import mcp_servers
    from kame_desktop.backend.tools.mcp_servers import wait_for_tools
    from kame_desktop.config import MemorySettings

    monkeypatch.setattr(mcp_servers, "PING_EVERY_S", 0.3)  # found and restarted in a fraction of the real times
    monkeypatch.setattr(mcp_servers, "BACKOFF_S", (0.5,))
    state = tmp_path / "state"
    settings = Settings(tools=ToolSettings(enabled=True, mcp=(stdio_mcp_server(state),)), memory=MemorySettings(enabled=False))
    window, backends = window_with_servers(make_window, qtbot, parts, settings)
    servers = backends[0].tools.servers
    assert wait_for_tools(servers, ["test.lookup"], MCP_START_S) and not window.banner.isVisible()
    os.kill(int(next(state.glob("pid-*")).name[4:]), signal.SIGKILL)
    qtbot.waitUntil(window.banner.isVisible, timeout=int(MCP_START_S * 1000))
    assert window.banner.text == ("tool: MCP server test stopped: it exited; its tools are off until it is back (retrying)")
    qtbot.waitUntil(lambda: servers.starts["test"] == 2, timeout=int(MCP_START_S * 1000))
    qtbot.waitUntil(lambda: not window.banner.isVisible(), timeout=int(MCP_START_S * 1000))
