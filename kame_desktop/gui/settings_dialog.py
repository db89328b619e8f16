"""The Settings dialog: LLM, speech recognition, audio devices, front-end, persona and history.
OK saves the settings and the API key together (`save_settings_and_key`; the key is never shown
back in clear), or says in the dialog why it cannot. A base URL that is empty or malformed is
refused where it is typed, and a system prompt too long for the model is flagged as it is typed.
*Test connection* streams a short reply off the GUI thread."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from typing import Any

import numpy as np
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMenu,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from kame_desktop import config, credentials
from kame_desktop.choices import (
    ASR_KINDS,
    COMPUTE_DEVICES,
    DEFAULT_LOCAL_MODEL,
    EMBEDDED_LLMS,
    FRONTEND_KINDS,
    LISTENING_LABELS,
    LISTENING_MODES,
    LLM_KINDS,
    LLM_LABELS,
    LOCAL_LLM,
    OPENAI_LLM,
    POLICIES,
    PRECISIONS,
    TURN_DETECTIONS,
    WAKE_WORDS,
)
from kame_desktop.config import LLM_PRESETS, Settings
from kame_desktop.gui.banner import ErrorBanner
from kame_desktop.gui.bridge import EventBridge
from kame_desktop.gui.key_capture import KeyCaptureEdit
from kame_desktop.gui.mcp_servers import McpServersBox
from kame_desktop.gui.meter import LevelMeter


def _form_page() -> tuple[QWidget, QFormLayout]:
    page = QWidget()
    return page, QFormLayout(page)


def _combo(items: tuple[str, ...] | list[str], current: str) -> QComboBox:
    box = QComboBox()
    box.addItems(list(items))
    if current not in items:
        box.addItem(current)
    box.setCurrentText(current)
    return box


def _warning_label(name: str) -> QLabel:
    label = QLabel("")
    label.setObjectName(name)
    label.setWordWrap(True)
    label.setStyleSheet("color: #a01010;")
    label.hide()
    return label


def _devices(kind: str) -> list[str]:
    """Names of the input or output devices ("" = system default); empty without sounddevice."""
    try:
        from kame_desktop.audio.device import list_devices

        names = []
        for d in list_devices():
            get = d.get if isinstance(d, dict) else lambda k, d=d: getattr(d, k, None)
            if (get("max_input_channels") or 0) > 0 if kind == "input" else (get("max_output_channels") or 0) > 0:
                names.append(str(get("name")))
        return names
    except Exception:
        return []


class SettingsDialog(QDialog):
    def __init__(self, settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings — kame-desktop")
        self.settings = settings
        self.saved: Settings | None = None
        self._relay = EventBridge()  # no Qt parent: a late worker result never hits a deleted object
        self._relay.received.connect(self._on_worker_result)
        self._worker: threading.Thread | None = None
        self.banner = ErrorBanner(self)
        tabs = QTabWidget()
        tabs.addTab(self._llm_page(settings), "LLM")
        tabs.addTab(self._asr_page(settings), "Speech")
        tabs.addTab(self._audio_page(settings), "Audio")
        tabs.addTab(self._frontend_page(settings), "Front-end")
        tabs.addTab(self._tools_page(settings), "Tools")
        tabs.addTab(self._persona_page(settings), "Persona")
        self.tabs = tabs
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        self.buttons = buttons
        layout = QVBoxLayout(self)
        layout.addWidget(self.banner)
        layout.addWidget(tabs)
        layout.addWidget(buttons)
        self._update_llm_fields()

    # --- pages ----------------------------------------------------------------------------------

    def _llm_page(self, s: Settings) -> QWidget:
        page, form = _form_page()
        self.llm_provider = QComboBox()
        for kind in LLM_KINDS:
            self.llm_provider.addItem(LLM_LABELS[kind], kind)
        self.llm_provider.setCurrentIndex(self.llm_provider.findData(s.llm.provider))
        self.llm_provider.currentIndexChanged.connect(self._update_llm_fields)
        form.addRow("Provider", self.llm_provider)
        self.gguf_path = QLineEdit(s.llm.gguf_path)
        self.gguf_path.setPlaceholderText(f"embedded {DEFAULT_LOCAL_MODEL} (or {', '.join(EMBEDDED_LLMS[1:])}: faster)")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse_gguf)
        row = QHBoxLayout()
        row.addWidget(self.gguf_path, 1)
        row.addWidget(browse)
        self.get_model = QPushButton("Download a stronger model…")
        self.get_model.setMenu(self._catalog_menu())
        row.addWidget(self.get_model)
        self.gguf_row = QWidget()
        self.gguf_row.setLayout(row)
        form.addRow("GGUF model", self.gguf_row)
        self.preset = _combo(list(LLM_PRESETS), s.llm.preset)
        self.preset.currentTextChanged.connect(self._apply_preset)
        form.addRow("Preset", self.preset)
        self.base_url = QLineEdit(s.llm.base_url)
        self.base_url.textChanged.connect(self._check_url)
        form.addRow("Base URL", self.base_url)
        self.url_problem = _warning_label("urlProblem")
        form.addRow("", self.url_problem)
        self.model = QLineEdit(s.llm.model)
        form.addRow("Model", self.model)
        self.api_key = QLineEdit()
        self.api_key.setEchoMode(QLineEdit.EchoMode.Password)
        self.api_key.setPlaceholderText("stored — type to replace" if credentials.llm_api_key() else "none stored")
        form.addRow("API key", self.api_key)
        self.test_button = QPushButton("Test connection")
        self.test_button.clicked.connect(self.test_connection)
        self.test_result = QLabel("")
        self.test_result.setObjectName("testResult")
        self.test_result.setWordWrap(True)
        form.addRow(self.test_button, self.test_result)
        self.policy = _combo(POLICIES, s.llm.policy)
        form.addRow("When to ask", self.policy)
        self.max_streams = QSpinBox()
        self.max_streams.setRange(1, 7)
        self.max_streams.setValue(max(1, min(7, s.llm.max_streams)))
        self.max_streams.setToolTip(
            "Answers that may stream at once: asking again keeps the one being spoken until a newer one "
            "starts to answer (1: cancel it at once). Needs a server that serves concurrent requests."
        )
        form.addRow("Overlapping answers", self.max_streams)
        self.llm_threads = QSpinBox()
        self.llm_threads.setRange(1, 64)
        self.llm_threads.setValue(s.llm.threads)
        form.addRow("Threads (local)", self.llm_threads)
        return page

    def _asr_page(self, s: Settings) -> QWidget:
        page, form = _form_page()
        self.asr_provider = _combo(ASR_KINDS, s.asr.provider)
        form.addRow("Provider", self.asr_provider)
        self.whisper_model = QLineEdit(s.asr.whisper_model)
        self.whisper_model.setToolTip("auto: for English, the embedded tiny.en while you talk and base at your pauses "
                                      "(base for other languages); tiny.en or base: one embedded model; a size name "
                                      "is downloaded; or a CTranslate2 model folder")
        form.addRow("Whisper model", self.whisper_model)
        self.asr_language = QLineEdit(s.asr.language)
        self.asr_language.setToolTip("The language you speak, as a Whisper code (en, fr, de, ja, …)")
        form.addRow("Language", self.asr_language)
        self.turn_detection = _combo(TURN_DETECTIONS, s.asr.turn_detection)
        self.turn_detection.setToolTip("smart: end your turn when the sentence sounds finished (Smart Turn); "
                                       "silence: after a fixed 0.5 s of silence")
        form.addRow("End of turn", self.turn_detection)
        return page

    def _audio_page(self, s: Settings) -> QWidget:
        page, form = _form_page()
        self.input_device = _combo(["", *_devices("input")], s.audio.input_device)
        form.addRow("Input device", self.input_device)
        self.output_device = _combo(["", *_devices("output")], s.audio.output_device)
        form.addRow("Output device", self.output_device)
        self.tone_button = QPushButton("Test tone + microphone")
        self.tone_button.clicked.connect(self.test_audio)
        self.live_meter = LevelMeter("microphone level")
        form.addRow(self.tone_button, self.live_meter)
        self.echo_cancellation = QCheckBox("Echo cancellation (off for headsets)")
        self.echo_cancellation.setChecked(s.audio.echo_cancellation)
        form.addRow(self.echo_cancellation)
        self.listening = QComboBox()
        for mode in LISTENING_MODES:
            self.listening.addItem(LISTENING_LABELS[mode], mode)
        self.listening.setCurrentIndex(max(0, self.listening.findData(s.audio.listening)))
        form.addRow("Listening", self.listening)
        self._add_wake_rows(form, s)
        self.ptt_key = KeyCaptureEdit(s.audio.ptt_key)
        form.addRow("Push-to-talk key", self.ptt_key)
        self.ptt_key_problem = _warning_label("pttKeyProblem")
        self.ptt_key.problem.connect(self._show_key_problem)
        form.addRow(self.ptt_key_problem)
        self._add_desktop_rows(form, s)
        return page

    def _add_wake_rows(self, form: QFormLayout, s: Settings) -> None:
        """Which wake word (each with how well `bench wake` heard it) and how readily."""
        from kame_desktop.audio.wake_word import wake_word_label

        self.wake_word = QComboBox()
        for word in WAKE_WORDS:
            self.wake_word.addItem(wake_word_label(word), word)
        self.wake_word.setCurrentIndex(max(0, self.wake_word.findData(s.audio.wake_word)))
        form.addRow("Wake word", self.wake_word)
        self.wake_sensitivity = QDoubleSpinBox()
        self.wake_sensitivity.setRange(0.0, 1.0)
        self.wake_sensitivity.setSingleStep(0.05)
        self.wake_sensitivity.setValue(s.audio.wake_sensitivity)
        self.wake_sensitivity.setToolTip("0.5: the model's own threshold; higher hears the word more readily, and wakes by mistake more often")
        form.addRow("Wake-word sensitivity", self.wake_sensitivity)

    def _add_desktop_rows(self, form: QFormLayout, s: Settings) -> None:
        """The global talk key (and, in one line, why it cannot work here) and the tray."""
        from kame_desktop.gui.tray import tray_available
        from kame_desktop.hotkey import global_key_support

        support = global_key_support()
        self.global_key = QCheckBox("The talk key works in every application (global)")
        self.global_key.setChecked(s.desktop.global_key)
        self.global_key_support = QLabel(support.detail if support.backend != "none" else
                                         f"Only in this window: {support.detail}" + (f" — {support.fix}" if support.fix else ""))
        self.global_key_support.setObjectName("globalKeySupport")
        self.global_key_support.setWordWrap(True)
        form.addRow(self.global_key)
        form.addRow(self.global_key_support)
        self.keep_in_tray = QCheckBox("Closing the window keeps the companion running in the tray")
        self.keep_in_tray.setChecked(s.desktop.keep_in_tray)
        if not tray_available():
            self.keep_in_tray.setEnabled(False)
            self.keep_in_tray.setToolTip("This desktop has no tray: closing the window quits")
        form.addRow(self.keep_in_tray)

    def _show_key_problem(self, problem: str) -> None:
        self.ptt_key_problem.setText(problem)
        self.ptt_key_problem.setVisible(bool(problem))

    def _frontend_page(self, s: Settings) -> QWidget:
        page, form = _form_page()
        self.frontend_kind = _combo(FRONTEND_KINDS, s.frontend.kind)
        form.addRow("Front-end", self.frontend_kind)
        self.checkpoint = QLineEdit(s.frontend.checkpoint)
        form.addRow("KAME checkpoint", self.checkpoint)
        self.compute_device = _combo(COMPUTE_DEVICES, s.frontend.device)
        form.addRow("Compute device", self.compute_device)
        self.dtype = _combo(PRECISIONS, s.frontend.dtype)
        form.addRow("Precision", self.dtype)
        self.int8 = QCheckBox("Quantize the LM to int8 (CUDA)")
        self.int8.setChecked(s.frontend.int8)
        form.addRow(self.int8)
        return page

    def _persona_page(self, s: Settings) -> QWidget:
        page = QWidget()
        layout = QVBoxLayout(page)
        layout.addWidget(QLabel("System prompt (empty: the built-in persona)"))
        self.system_prompt = QPlainTextEdit(s.system_prompt)
        self.system_prompt.textChanged.connect(self._check_prompt)
        layout.addWidget(self.system_prompt)
        self.prompt_problem = _warning_label("promptProblem")
        layout.addWidget(self.prompt_problem)
        self.history = QCheckBox("Keep a history of conversations")
        self.history.setChecked(s.history)
        layout.addWidget(self.history)
        return page

    def _tools_page(self, s: Settings) -> QWidget:
        from kame_desktop.backend.tools import builtin_tools

        page = QWidget()
        layout = QVBoxLayout(page)
        # Memory (backend/memory.py): off, nothing is written or used; Conversation → Memory… lists it.
        self.memory_enabled = QCheckBox("Remember what I tell the companion about myself (kept on this computer; "
                                        "Conversation → Memory… shows and edits it)")
        self.memory_enabled.setChecked(s.memory.enabled)
        layout.addWidget(self.memory_enabled)
        self.tools_enabled = QCheckBox("Let the companion use tools (it looks things up while you talk; "
                                       "timers and notes are set only once you have finished)")
        self.tools_enabled.setChecked(s.tools.enabled)
        layout.addWidget(self.tools_enabled)
        self.tool_boxes: dict[str, QCheckBox] = {}
        for tool in builtin_tools():
            box = QCheckBox(f"{tool.name}: {tool.description}")
            box.setChecked(tool.name not in s.tools.disabled)
            self.tool_boxes[tool.name] = box
            layout.addWidget(box)
        self.mcp = McpServersBox(s.tools)
        layout.addWidget(self.mcp)
        self.tools_enabled.toggled.connect(lambda on: [b.setEnabled(on) for b in (*self.tool_boxes.values(), self.mcp)])
        self.tools_enabled.toggled.emit(s.tools.enabled)
        return page

    # --- behaviour ------------------------------------------------------------------------------

    def _update_llm_fields(self) -> None:
        local = self.llm_provider.currentData() == LOCAL_LLM
        self.gguf_row.setEnabled(local)
        self.llm_threads.setEnabled(local)
        for w in (self.preset, self.base_url, self.model, self.api_key, self.test_button, self.max_streams):
            w.setEnabled(not local)
        self._check_url()
        self._check_prompt()

    def url_problem_text(self) -> str | None:
        """Why the typed base URL cannot be used, or None (also None for the local LLM)."""
        if self.llm_provider.currentData() != OPENAI_LLM:
            return None
        return config.llm_url_problem(self.base_url.text().strip())  # values() strips it too

    def _check_url(self) -> None:
        problem = self.url_problem_text()
        self.url_problem.setText(problem or "")
        self.url_problem.setVisible(problem is not None)

    def prompt_problem_text(self) -> str | None:
        """The system prompt's excess over what the chosen model takes, estimated (about four
        characters a token; the session counts with the model's own tokenizer), or None."""
        from kame_desktop.backend.factory import context_tokens_of, prompt_too_long

        text = self.system_prompt.toPlainText().strip()
        return prompt_too_long(-(-len(text) // 4), context_tokens_of(self.llm_provider.currentData())) if text else None

    def _check_prompt(self) -> None:
        problem = self.prompt_problem_text()
        self.prompt_problem.setText(f"Estimated: {problem}" if problem else "")
        self.prompt_problem.setVisible(problem is not None)

    def _apply_preset(self, preset: str) -> None:
        url, model = LLM_PRESETS.get(preset, ("", ""))
        if url:
            self.base_url.setText(url)
            self.model.setText(model)

    def _catalog_menu(self) -> QMenu:
        """The catalog's GGUF models; read lazily (on show) so a broken catalog only greys the menu."""
        menu = QMenu(self)

        def fill() -> None:
            from kame_desktop.errors import DownloadError
            from kame_desktop.models.catalog import load_catalog

            menu.clear()
            try:
                entries = [e for e in load_catalog() if e.kind == "gguf"]
            except DownloadError as e:
                menu.addAction(str(e)).setEnabled(False)
                return
            for e in entries:
                action = menu.addAction(f"{e.name} — about {e.approx_bytes / 1e9:.1f} GB, {e.license}")
                action.triggered.connect(lambda _=False, e=e: self.download_gguf(e))

        menu.aboutToShow.connect(fill)
        return menu

    def download_gguf(self, entry: Any) -> None:
        """Open the model manager for a catalog entry; a verified download fills the GGUF field."""
        from kame_desktop.gui.model_manager import ModelManagerDialog

        dialog = ModelManagerDialog(entry, self)
        dialog.downloaded.connect(self.gguf_path.setText)
        self.model_dialog = dialog
        dialog.open()

    def _browse_gguf(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose a GGUF model", "", "GGUF models (*.gguf)")
        if path:
            self.gguf_path.setText(path)

    def values(self) -> Settings:
        s = self.settings
        mcp, mcp_off, _ = self.mcp.values()
        return dataclasses.replace(
            s,
            llm=dataclasses.replace(
                s.llm,
                provider=self.llm_provider.currentData(),
                preset=self.preset.currentText(),
                base_url=self.base_url.text().strip(),
                model=self.model.text().strip(),
                gguf_path=self.gguf_path.text().strip(),
                threads=self.llm_threads.value(),
                policy=self.policy.currentText(),
                max_streams=self.max_streams.value(),
            ),
            asr=dataclasses.replace(s.asr, provider=self.asr_provider.currentText(),
                                    whisper_model=self.whisper_model.text().strip() or "auto",
                                    language=self.asr_language.text().strip().lower() or "en",
                                    turn_detection=self.turn_detection.currentText()),
            audio=dataclasses.replace(
                s.audio,
                input_device=self.input_device.currentText(),
                output_device=self.output_device.currentText(),
                echo_cancellation=self.echo_cancellation.isChecked(),
                listening=self.listening.currentData(),
                wake_word=self.wake_word.currentData(),
                wake_sensitivity=round(self.wake_sensitivity.value(), 2),
                ptt_key=self.ptt_key.text().strip() or "Space",
            ),
            frontend=dataclasses.replace(
                s.frontend,
                kind=self.frontend_kind.currentText(),
                checkpoint=self.checkpoint.text().strip(),
                device=self.compute_device.currentText(),
                dtype=self.dtype.currentText(),
                int8=self.int8.isChecked(),
            ),
            desktop=dataclasses.replace(s.desktop, global_key=self.global_key.isChecked(),
                                        keep_in_tray=self.keep_in_tray.isChecked()),
            tools=dataclasses.replace(s.tools, enabled=self.tools_enabled.isChecked(), disabled=tuple(
                name for name, box in self.tool_boxes.items() if not box.isChecked()) + mcp_off, mcp=mcp),
            memory=dataclasses.replace(s.memory, enabled=self.memory_enabled.isChecked()),
            system_prompt=self.system_prompt.toPlainText(),
            history=self.history.isChecked(),
        )

    def accept(self) -> None:
        from kame_desktop.errors import KameError

        if problem := self.url_problem_text():  # refused here: the session would have no server to ask
            self.tabs.setCurrentIndex(0)
            self.banner.show_error(f"Cannot save: {problem}.", settings_fix=False)
            return
        settings = self.values()
        key = self.api_key.text() or None
        try:
            credentials.save_settings_and_key(settings, key, tokens=self.mcp.values()[2])
        except KameError as e:  # the dialog stays open with what was typed; nothing half-saved
            self.banner.show_error(f"Cannot save: {e}", settings_fix=False)
            return
        self.api_key.clear()
        self.saved = settings
        super().accept()

    # --- workers (off the GUI thread) --------------------------------------------------------------

    def _start_worker(self, target: Any) -> None:
        self._worker = threading.Thread(target=target, name="kame-settings-test", daemon=True)
        self._worker.start()

    def test_connection(self) -> None:
        from kame_desktop.backend.llm.openai_compat import OpenAiLlm

        url, model = self.base_url.text().strip(), self.model.text().strip()
        if problem := config.llm_url_problem(url):  # what the session would say: nothing is sent
            self.test_result.setText("Failed.")
            self.banner.show_error(f"Connection failed: {problem}.", settings_fix=False)
            return
        key = self.api_key.text() or credentials.llm_api_key()
        self.test_button.setEnabled(False)
        self.test_result.setText("Testing…")
        self.banner.hide()

        def run() -> None:
            async def go() -> str:
                llm = OpenAiLlm(url, model, api_key=key, timeout=15.0)
                try:
                    return await llm.test_connection()
                finally:
                    await llm.aclose()

            try:
                self._relay(("test_ok", asyncio.run(go())))
            except Exception as e:
                self._relay(("test_error", str(e) or type(e).__name__))

        self._start_worker(run)

    def test_audio(self) -> None:
        inp, out = self.input_device.currentText() or None, self.output_device.currentText() or None
        self.tone_button.setEnabled(False)

        def run() -> None:
            try:
                from kame_desktop.audio.device import DuplexAudio
                from kame_desktop.events import FRAME_SIZE, SAMPLE_RATE

                audio = DuplexAudio(inp, out)
                try:
                    t = np.arange(FRAME_SIZE) / SAMPLE_RATE
                    for i in range(25):  # 2 s: a quiet 440 Hz tone out, the microphone level in
                        audio.write((0.2 * np.sin(2 * np.pi * 440 * (t + i * FRAME_SIZE / SAMPLE_RATE))).astype(np.float32))
                        frame = audio.read()
                        if frame is None:
                            break
                        self._relay(("level", float(min(1.0, np.sqrt(np.mean(frame**2)) * 4))))
                finally:
                    audio.close()
                self._relay(("audio_ok", ""))
            except Exception as e:
                self._relay(("audio_error", str(e) or type(e).__name__))

        self._start_worker(run)

    def _on_worker_result(self, item: object) -> None:
        what, value = item  # type: ignore[misc]
        if what == "test_ok":
            self.test_button.setEnabled(True)
            self.test_result.setText(f"Connected. Reply: {value}")
        elif what == "test_error":
            self.test_button.setEnabled(True)
            self.test_result.setText("Failed.")
            fix = "" if "Settings" in value else " — check the base URL, the model name and the API key."
            self.banner.show_error(f"Connection failed: {value}{fix}", settings_fix=False)
        elif what == "level":
            self.live_meter.set_level(value)
        elif what == "audio_ok":
            self.tone_button.setEnabled(True)
            self.live_meter.set_level(0.0)
        elif what == "audio_error":
            self.tone_button.setEnabled(True)
            self.banner.show_error(f"Audio test failed: {value} — choose another device.", settings_fix=False)
