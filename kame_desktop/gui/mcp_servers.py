"""The Settings dialog's MCP servers (Tools tab): each server on or off, added, edited or removed
in an editor whose *Test* starts it off the GUI thread and lists its tools, each of which can be
switched off. A token typed for an HTTP server goes to the keyring when Settings is saved
(`save_settings_and_key`), never into the settings file, and is never shown back."""

from __future__ import annotations

import dataclasses
import shlex
import threading

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from kame_desktop import credentials
from kame_desktop.choices import MCP_TRANSPORTS
from kame_desktop.config import McpServerSettings, ToolSettings
from kame_desktop.gui.bridge import EventBridge


def _checked(item: QListWidgetItem) -> bool:
    return item.checkState() == Qt.CheckState.Checked


def _check_state(on: bool) -> Qt.CheckState:
    return Qt.CheckState.Checked if on else Qt.CheckState.Unchecked


class McpServersBox(QWidget):
    """The list of servers; `values()` gives them, the tools switched off and the tokens typed."""

    def __init__(self, tools: ToolSettings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.servers: list[McpServerSettings] = list(tools.mcp)
        self.disabled: set[str] = {name for name in tools.disabled if "." in name}  # servers' tools: server.tool
        self.tokens: dict[str, str] = {}  # server name -> typed token ("" forgets it), stored on OK
        self.editor: McpServerDialog | None = None
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        note = QLabel("MCP servers: your own tools (calendar, files, home…). Each is off until you tick it; "
                      "a server is sent only the arguments of the tool the companion calls, never the conversation.")
        note.setWordWrap(True)
        layout.addWidget(note)
        self.list = QListWidget()
        self.list.setObjectName("mcpServers")
        self.list.itemDoubleClicked.connect(lambda _item: self.edit())
        layout.addWidget(self.list)
        row = QHBoxLayout()
        self.add_button, self.edit_button, self.remove_button = QPushButton("Add…"), QPushButton("Edit…"), QPushButton("Remove")
        self.add_button.clicked.connect(self.add)
        self.edit_button.clicked.connect(self.edit)
        self.remove_button.clicked.connect(self.remove)
        for button in (self.add_button, self.edit_button, self.remove_button):
            row.addWidget(button)
        row.addStretch(1)
        layout.addLayout(row)
        self._fill()

    def _fill(self) -> None:
        from kame_desktop.backend.tools.mcp_servers import where

        self.list.clear()
        for server in self.servers:
            item = QListWidgetItem(f"{server.name} — {where(server)}")
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(_check_state(server.enabled))
            self.list.addItem(item)

    def _sync_enabled(self) -> None:
        """The ticks, into `servers` (before the list is rebuilt or read)."""
        for row, server in enumerate(self.servers):
            if (item := self.list.item(row)) is not None:
                self.servers[row] = dataclasses.replace(server, enabled=_checked(item))

    def values(self) -> tuple[tuple[McpServerSettings, ...], tuple[str, ...], dict[str, str]]:
        """The servers, the names of their tools switched off, and the tokens to store."""
        self._sync_enabled()
        names = {server.name for server in self.servers}
        disabled = tuple(sorted(n for n in self.disabled if n.split(".", 1)[0] in names))
        return tuple(self.servers), disabled, dict(self.tokens)

    def add(self) -> None:
        taken = {server.name for server in self.servers}
        name = next(f"server{n}" for n in range(1, len(taken) + 2) if f"server{n}" not in taken)
        self._open(McpServerSettings(name=name), None)

    def edit(self) -> None:
        row = self.list.currentRow()
        if 0 <= row < len(self.servers):
            self._sync_enabled()
            self._open(self.servers[row], row)

    def remove(self) -> None:
        row = self.list.currentRow()
        if 0 <= row < len(self.servers):
            server = self.servers.pop(row)
            self._forget(server.name)
            self._fill()

    def _forget(self, name: str) -> None:
        self.disabled = {n for n in self.disabled if not n.startswith(f"{name}.")}
        self.tokens[name] = ""  # its token goes from the keyring too

    def _open(self, server: McpServerSettings, row: int | None) -> None:
        others = {s.name for i, s in enumerate(self.servers) if i != row}
        editor = McpServerDialog(server, others, self.disabled, self.tokens.get(server.name), self)
        editor.accepted.connect(lambda: self._edited(editor, row))
        self.editor = editor
        editor.open()

    def _edited(self, editor: McpServerDialog, row: int | None) -> None:
        server, old = editor.server(), editor.original.name
        if row is None:
            self.servers.append(server)
        else:
            self.servers[row] = server
            if server.name != old:  # renamed: its switched-off tools and its token follow it
                self.disabled = {f"{server.name}.{n.split('.', 1)[1]}" if n.startswith(f"{old}.") else n
                                 for n in self.disabled}
                self.tokens[server.name] = self.tokens.get(old) or credentials.mcp_token(old) or ""
                self.tokens[old] = ""
        if editor.listed is not None:  # tested: its tools' ticks say which are off
            prefix = f"{server.name}."
            self.disabled = {n for n in self.disabled if not n.startswith(prefix)} | editor.switched_off()
        if editor.token.text().strip():
            self.tokens[server.name] = editor.token.text().strip()
        self._fill()
        self.list.setCurrentRow(len(self.servers) - 1 if row is None else row)


class McpServerDialog(QDialog):
    """One server: how to start or reach it, its token and time limit; *Test* lists its tools."""

    def __init__(self, server: McpServerSettings, taken: set[str], disabled: set[str], token: str | None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("MCP server — kame-desktop")
        self.original, self.taken, self.disabled = server, taken, disabled
        self.listed: list | None = None  # the tools the last Test listed
        self._relay = EventBridge()  # no Qt parent: a late Test result never hits a deleted dialog
        self._relay.received.connect(self._on_tested)
        self._worker: threading.Thread | None = None
        form = QFormLayout(self)
        self.name = QLineEdit(server.name)
        self.name.setToolTip("Its tools are offered as name.tool (letters, digits, - and _)")
        form.addRow("Name", self.name)
        self.transport = QComboBox()
        self.transport.addItems(list(MCP_TRANSPORTS))
        self.transport.setCurrentText(server.transport)
        self.transport.currentTextChanged.connect(self._update_fields)
        form.addRow("Transport", self.transport)
        self.command = QLineEdit(server.command)
        self.command.setPlaceholderText("the program that starts it, e.g. uvx or npx")
        form.addRow("Command", self.command)
        self.args = QLineEdit(shlex.join(server.args))
        self.args.setPlaceholderText("e.g. mcp-server-time --local-timezone Europe/Paris")
        form.addRow("Arguments", self.args)
        self.env = QPlainTextEdit("\n".join(server.env))
        self.env.setPlaceholderText("NAME=value, one a line (the server gets these, PATH and HOME)")
        self.env.setMaximumHeight(70)
        form.addRow("Environment", self.env)
        self.url = QLineEdit(server.url)
        self.url.setPlaceholderText("http://127.0.0.1:8000/mcp")
        form.addRow("URL", self.url)
        self.token_header = QLineEdit(server.token_header)
        form.addRow("Token header", self.token_header)
        self.token = QLineEdit(token or "")
        self.token.setEchoMode(QLineEdit.EchoMode.Password)
        stored = credentials.mcp_token(server.name) if server.name else None
        self.token.setPlaceholderText("stored — type to replace" if stored else "none stored")
        form.addRow("Token", self.token)
        self.timeout = QDoubleSpinBox()
        self.timeout.setRange(1.0, 600.0)
        self.timeout.setSuffix(" s")
        self.timeout.setValue(server.timeout_s)
        self.timeout.setToolTip("A call that takes longer is cut, and the companion told so")
        form.addRow("Time limit", self.timeout)
        self.test_button = QPushButton("Test")
        self.test_button.clicked.connect(self.test)
        self.test_result = QLabel("")
        self.test_result.setObjectName("mcpTestResult")
        self.test_result.setWordWrap(True)
        form.addRow(self.test_button, self.test_result)
        self.tool_list = QListWidget()
        self.tool_list.setObjectName("mcpTools")
        self.tool_list.setToolTip("Untick a tool to keep it from the companion")
        form.addRow(self.tool_list)
        self.problem = QLabel("")
        self.problem.setObjectName("mcpProblem")
        self.problem.setWordWrap(True)
        self.problem.setStyleSheet("color: #a01010;")
        self.problem.hide()
        form.addRow(self.problem)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        self.buttons = buttons
        form.addRow(buttons)
        self._update_fields()

    def _update_fields(self) -> None:
        stdio = self.transport.currentText() == "stdio"
        for widget in (self.command, self.args, self.env):
            widget.setEnabled(stdio)
        for widget in (self.url, self.token_header, self.token):
            widget.setEnabled(not stdio)

    def server(self) -> McpServerSettings:
        """The server as typed (not checked: `problem_text` says what is wrong)."""
        try:
            args = tuple(shlex.split(self.args.text()))
        except ValueError:  # an unclosed quote: problem_text says so
            args = tuple(self.args.text().split())
        return dataclasses.replace(
            self.original, name=self.name.text().strip(), transport=self.transport.currentText(),
            command=self.command.text().strip(), args=args,
            env=tuple(line.strip() for line in self.env.toPlainText().splitlines() if line.strip()),
            url=self.url.text().strip(), token_header=self.token_header.text().strip() or "Authorization",
            timeout_s=round(self.timeout.value(), 1))

    def problem_text(self) -> str | None:
        from kame_desktop.backend.tools.mcp_servers import server_problem

        server = self.server()
        if server.name in self.taken:
            return f"there is already a server named {server.name}"
        try:
            shlex.split(self.args.text())
        except ValueError as e:
            return f"the arguments cannot be read ({e}) — close the quote"
        return server_problem(server)

    def switched_off(self) -> set[str]:
        """The full names of the listed tools that are unticked."""
        name = self.server().name
        return {f"{name}.{self.tool_list.item(i).data(Qt.ItemDataRole.UserRole)}"
                for i in range(self.tool_list.count()) if not _checked(self.tool_list.item(i))}

    def _show_problem(self, text: str | None) -> None:
        self.problem.setText(text or "")
        self.problem.setVisible(bool(text))

    def accept(self) -> None:
        if problem := self.problem_text():
            self._show_problem(problem)
            return
        super().accept()

    def test(self) -> None:
        """Start the server as typed, list its tools and end it (on a thread)."""
        from kame_desktop.backend.tools.mcp_servers import McpError, list_server_tools

        problem = self.problem_text()
        self._show_problem(problem)
        if problem:
            return
        server = self.server()
        token = self.token.text().strip() or credentials.mcp_token(self.original.name) or ""
        self.test_button.setEnabled(False)
        self.test_result.setText("Starting it…")

        def run() -> None:
            try:
                self._relay(("ok", list_server_tools(server, token)))
            except McpError as e:
                self._relay(("error", str(e)))
            except Exception as e:  # a bug must not leave the button off
                self._relay(("error", f"{type(e).__name__}: {e}"[:200]))

        self._worker = threading.Thread(target=run, name="kame-mcp-test", daemon=True)
        self._worker.start()

    def _on_tested(self, item: object) -> None:
        what, value = item  # type: ignore[misc]
        self.test_button.setEnabled(True)
        if what == "error":
            self.test_result.setText("Failed.")
            self._show_problem(f"Test failed: {value}")
            return
        self._show_problem(None)
        self.listed = value
        name = self.server().name
        self.test_result.setText(f"It works: {len(value)} tools.")
        self.tool_list.clear()
        for tool in value:
            how = "read-only" if tool.read_only else "changes something: only once you have finished"
            item = QListWidgetItem(f"{tool.name} ({how}) — {tool.description}")
            item.setData(Qt.ItemDataRole.UserRole, tool.name)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(_check_state(f"{name}.{tool.name}" not in self.disabled))
            self.tool_list.addItem(item)
