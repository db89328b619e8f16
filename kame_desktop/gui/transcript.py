"""The conversation view: one column of turns. Each turn shows what the user said (partial words
in grey while spoken, then the final words), the companion's reply under it (a barge-in marks
where it was cut) and, under the reply, the oracle stream that shaped it: every LLM request asked
during that turn, live, with what it said, whether the companion heard it (adopted, or reset into
KAME) and how it ended. The oracle part of a turn folds away with a click on its heading (open by
default).

This replaced the three side-by-side lanes (you / oracle / companion): they showed the same text,
but nothing lined a reply up with its question or a request with the reply it fed.

Events only update the turn model (gui/turns.py). At most every `REDRAW_MS` the view rewrites the
document from the first turn that changed (live, the last one or two) to its end: one text
document laid out incrementally, so a long conversation costs the GUI thread no more per event
than a short one (a widget per turn would lay them all out again at each word)."""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache

from PySide6.QtCore import QTimer, QUrl
from PySide6.QtGui import QColor, QFont, QTextBlockFormat, QTextCharFormat, QTextCursor
from PySide6.QtWidgets import QTextBrowser, QWidget

from kame_desktop.events import Stamped
from kame_desktop.gui.turns import Conversation, Request, Turn

REDRAW_MS = 50
STYLES = {  # color, bold, italic
    "user": ("#202020", False, False),
    "head": ("#202020", True, False),
    "partial": ("#9a9a9a", False, True),
    "reply_head": ("#1b6e3a", True, False),
    "assistant": ("#1b6e3a", False, False),
    "oracle": ("#1f5fa8", False, False),
    "marker": ("#b35900", True, False),
    "faded": ("#8a8a8a", False, False),
    "link": ("#555555", True, False),
}
Line = tuple[str, int, list[tuple[str, str]]]  # (part, indent, [(text, style)])


@cache
def _format(style: str, href: str = "") -> QTextCharFormat:
    color, bold, italic = STYLES[style]
    fmt = QTextCharFormat()
    fmt.setForeground(QColor(color))
    fmt.setFontWeight(QFont.Weight.Bold if bold else QFont.Weight.Normal)
    fmt.setFontItalic(italic)
    if href:
        fmt.setAnchor(True)
        fmt.setAnchorHref(href)
    return fmt


def _clock(t: float) -> str:
    minutes, seconds = divmod(t, 60.0)
    return f"{int(minutes)}:{seconds:04.1f}"


def _request_lines(r: Request) -> list[Line]:
    tags = [] if r.id is None else [f"request {r.id}"]
    if r.policy == "repeat":
        tags.append(f"asked to repeat: {r.why}" if r.why else "asked to repeat")
    elif r.policy == "announcement":
        tags.append("said unasked (a timer)")
    elif r.policy and r.policy != "script":
        tags.append(r.policy + (f", {r.words} words" if r.words else ""))
    if r.adopted_ms is not None and r.policy not in ("repeat", "announcement"):
        tags.append(f"heard after {r.adopted_ms:.0f} ms")
    elif r.reset and r.adopted_ms is None:
        tags.append("reset")
    if r.ended:
        tags.append(r.ended)
    if r.late:
        tags.append(f"{r.late} late")
    head = ("⟲ " if r.heard else "· ") + " · ".join(tags)
    text = (r.oracle or r.text).strip()
    body = [(text, "oracle" if r.heard else "faded")] if text else [("(no text)", "partial")]
    calls = [("oracle", 1, [(line, "marker")]) for line in r.tools]
    return [("oracle", 1, [(head, "marker" if r.heard else "faded")]), *calls, ("oracle", 1, body)]


def turn_lines(turn: Turn, folded: bool) -> list[Line]:
    """What the view shows of one turn, line by line."""
    lines: list[Line] = []
    if turn.question:
        head = [(f"You · {_clock(turn.t)}", "head")]
        if turn.unclear:
            head.append(("  — didn't catch that", "marker"))
        words = [(turn.final, "user")] if turn.final else []
        if turn.partial:
            # grey while revisable; a turn that ended on them keeps them (its final words may follow)
            words.append(((" " if turn.final else "") + turn.partial, "user" if turn.ended else "partial"))
        lines += [("question", 0, head), ("question", 0, words)]
    if turn.reply:
        said = [(text, "assistant") if kind == "said" else (" ⟂ interrupted", "marker") for text, kind in turn.reply]
        said[0] = (said[0][0].lstrip(), said[0][1])
        lines += [("reply", 0, [("Companion", "reply_head")]), ("reply", 0, said)]
    if turn.requests or turn.notes:
        n = len(turn.requests)
        title = f"Oracle · {n} request{'s' if n != 1 else ''}" if n else "Oracle"
        lines.append(("toggle", 0, [(("▸ " if folded else "▾ ") + title, "link")]))
        if not folded:
            for r in turn.requests:
                lines += _request_lines(r)
            lines += [("oracle", 1, [(note, "marker")]) for note in turn.notes]
    return lines


class TranscriptView(QTextBrowser):
    """The conversation, turn after turn, following the newest unless the user scrolled up."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("conversation")
        self.setOpenLinks(False)
        self.anchorClicked.connect(self._on_link)
        self.model = Conversation()
        self.folded: set[int] = set()  # turns whose oracle part is folded away
        self._starts: list[int] = []  # document position where each drawn turn begins
        self._shown: list[dict[str, str]] = []  # each drawn turn's text by part
        self._dirty: int | None = None  # the first turn to draw again
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(REDRAW_MS)
        self._timer.timeout.connect(self.redraw)

    # --- events ---------------------------------------------------------------------------------

    def handle(self, stamped: Stamped) -> None:
        turn = self.model.handle(stamped)
        if turn is not None:
            self._dirty = turn.index if self._dirty is None else min(self._dirty, turn.index)
            if not self._timer.isActive():
                self._timer.start()

    def show_records(self, records: Iterable[Stamped]) -> None:
        self.clear()
        for record in records:
            self.model.handle(record)
        self._dirty = 0
        self.redraw()

    def clear(self) -> None:
        super().clear()
        self._timer.stop()
        self.model = Conversation()
        self.folded.clear()
        self._starts, self._shown, self._dirty = [], [], None

    def toggle_oracle(self, index: int) -> None:
        self.folded ^= {index}
        self._dirty = index if self._dirty is None else min(self._dirty, index)
        self.redraw()

    def _on_link(self, url: QUrl) -> None:
        if url.scheme() == "fold":
            self.toggle_oracle(int(url.path()))

    def redraw(self) -> None:
        """Rewrite the document from the first turn that changed (the timer calls it)."""
        self._timer.stop()
        turns = self.model.turns
        first = min(self._dirty if self._dirty is not None else len(turns), len(self._starts))
        self._dirty = None
        if first >= len(turns):
            return
        bar = self.verticalScrollBar()
        follow, keep = bar.value() >= bar.maximum() - 4, bar.value()
        cursor = QTextCursor(self.document())
        cursor.beginEditBlock()
        if first < len(self._starts):
            cursor.setPosition(self._starts[first])
            cursor.movePosition(QTextCursor.MoveOperation.End, QTextCursor.MoveMode.KeepAnchor)
            cursor.removeSelectedText()
        else:
            cursor.movePosition(QTextCursor.MoveOperation.End)
        del self._starts[first:], self._shown[first:]
        for turn in turns[first:]:
            shown: dict[str, str] = {}
            for k, (part, indent, pieces) in enumerate(turn_lines(turn, turn.index in self.folded)):
                block = QTextBlockFormat()
                block.setLeftMargin(20 * indent)
                block.setTopMargin(10 if k == 0 and turn.index else 0)
                if cursor.block().length() > 1:  # the block holds text: start the next one
                    cursor.insertBlock(block)
                else:
                    cursor.setBlockFormat(block)
                if k == 0:
                    self._starts.append(cursor.position())
                for text, style in pieces:
                    cursor.insertText(text, _format(style, f"fold:{turn.index}" if part == "toggle" else ""))
                line = "".join(text for text, _ in pieces)
                shown[part] = f"{shown[part]}\n{line}" if part in shown else line
            if turn.index >= len(self._starts):  # nothing to show yet: hold its place
                self._starts.append(cursor.position())
            self._shown.append(shown)
        cursor.endEditBlock()
        bar.setValue(bar.maximum() if follow else keep)

    # --- reading it (tests, screenshots) ----------------------------------------------------------

    @property
    def turns(self) -> list[Turn]:
        return self.model.turns

    def text(self, part: str, index: int | None = None) -> str:
        """What the view shows of `part` ("question", "reply", "toggle" or "oracle") for turn
        `index`, or for all turns, one after the other."""
        self.redraw()
        shown = self._shown if index is None else [self._shown[index]]
        return "\n".join(s[part] for s in shown if part in s)

    def turn_text(self, index: int) -> str:
        """The document's text of turn `index` as drawn."""
        self.redraw()
        cursor = QTextCursor(self.document())
        cursor.setPosition(self._starts[index])
        if index + 1 < len(self._starts):
            cursor.setPosition(self._starts[index + 1], QTextCursor.MoveMode.KeepAnchor)
        else:
            cursor.movePosition(QTextCursor.MoveOperation.End, QTextCursor.MoveMode.KeepAnchor)
        return cursor.selectedText().replace("\u2029", "\n").strip()
