"""The companion's memory of the user: short items kept in the data folder (`memory.json`, 0600,
written atomically), put into the system prompt, and written from what the user says.

- **Store** (`MemoryStore`): items with a topic ("home"), a text ("The user lives in Lyon."),
  when, from which conversation and how (`said`, `tool`, `typed`). A duplicate merges with its
  item (its use count goes up); about the same subject ("the user", "the user's cat"), a new
  value for a known topic or the same sentence with a new ending ("… lives in Paris." → "…
  lives in Lyon.") replaces the old item. A file that cannot be
  read as a memory is set aside (`memory.json.bad-<time>`), the store says so once (`notice`)
  and starts afresh. No item text is ever logged.
- **Use** (`MemoryKeeper.system_prompt`): the items go into the system prompt once per
  conversation, newest and most used first, within `PROMPT_TOKENS`, so the prompt stays the same
  from request to request (llama.cpp reuses what it has read). An item kept or forgotten during
  the conversation joins at the next turn as a note at the start of the latest user message
  (`notes`): the prefix the model has read stays valid.
- **Writing**: only from a turn's final words. With tools, through `remember` / `forget`
  (backend/tools/memory.py; TurnTools runs them only on the final words, once). Without, the
  keeper asks the LLM once the turn is over and the back-end idle (nobody talking, no answer
  streaming, the companion quiet): a small request of its own (`EXTRACT_PROMPT`, the user's
  statements only: a question costs none), dropped the moment the user talks again and retried
  later; a line is kept only when its words came from the user. The in-process model then reads the conversation's system prompt again while idle,
  so the next answer does not pay for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kame_desktop.backend.words import normalized_words
from kame_desktop.config import data_dir
from kame_desktop.fileio import atomic_write_bytes

if TYPE_CHECKING:
    from kame_desktop.backend.llm.base import LlmProvider
    from kame_desktop.backend.oracle_manager import OracleManager

log = logging.getLogger(__name__)

MEMORY_FILE = "memory.json"
MEMORY_VERSION = 1
PROMPT_TOKENS = 300  # the most the items take in the system prompt
MAX_TEXT = 200  # characters of one item
HOWS = ("said", "tool", "typed")


def memory_path() -> Path:
    return data_dir() / MEMORY_FILE


def _now() -> str:
    return datetime.now().isoformat(timespec="seconds")


@dataclass(frozen=True)
class MemoryItem:
    id: str
    topic: str
    text: str
    created: str  # ISO 8601, local time
    updated: str
    conversation: str  # when the conversation it came from started (ISO 8601, local), "" if none
    how: str = "said"  # HOWS
    uses: int = 1  # how often it was said, confirmed or recalled

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @staticmethod
    def from_json(row: Any) -> MemoryItem:
        if not isinstance(row, dict):
            raise ValueError("an item is not an object")
        fields = {f.name: f.type for f in dataclasses.fields(MemoryItem)}
        values = {k: row[k] for k in fields if k in row}
        for k in ("id", "topic", "text", "created", "updated", "conversation", "how"):
            if not isinstance(values.get(k, ""), str):
                raise ValueError(f"an item's {k} is not text")
        if not isinstance(values.get("uses", 1), int) or not values.get("text"):
            raise ValueError("an item without text")
        return MemoryItem(**{"conversation": "", **values})


# --- words --------------------------------------------------------------------------------------

_STOP_WORDS = (
    "a an the and or but is are was were be been am i i'm me my mine you your user user's users to of in on at "
    "for with from by about as that this it its it's they them their he she his her we our us do does did have "
    "has had not no so if then than there here what who when where which how please remember forget just also "
    "too really very actually now")
_STOP = frozenset(_STOP_WORDS.split())


def content_words(text: str) -> set[str]:
    """The words that carry meaning, plural and third-person "s" dropped ("lives" is "live")."""
    out = set()
    for w in normalized_words(text):
        if w not in _STOP and len(w) > 1:
            w = w.removesuffix("'s")
            out.add(w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w)
    return out


def topic_key(topic: str) -> str:
    """"The user's home city" and "home city" are one topic."""
    return " ".join(w for w in normalized_words(topic) if w not in ("the", "user's", "users", "my", "user")) or topic.strip().lower()


def third_person(text: str) -> str:
    """A fact as the prompt states it: about "the user", never "I"; a move as where one lives now
    ("The user moved to Lyon." → "The user lives in Lyon.", the same sentence as where they lived)."""
    out = " ".join(text.split())[:MAX_TEXT]
    for pattern, repl in ((r"\bI am\b|\bI'm\b", "the user is"), (r"\bI\b", "the user"), (r"\bmy\b", "the user's"),
                          (r"\bme\b", "the user"), (r"\bmine\b", "the user's"),
                          (r"\bhave moved to\b", "live in"), (r"\b(?:has |had )?moved to\b", "lives in")):
        out = re.sub(pattern, repl, out, flags=re.IGNORECASE)
    out = out[:1].upper() + out[1:]
    return out if out.endswith((".", "!", "?")) else out + "."


def _same_sentence(a: str, b: str) -> bool:
    """The same statement with a new ending ("… lives in Paris" / "… lives in Lyon"): a correction."""
    wa, wb = normalized_words(a), normalized_words(b)
    prefix = 0
    for x, y in zip(wa, wb, strict=False):
        if x != y:
            break
        prefix += 1
    return wa != wb and prefix >= max(3, round(0.6 * min(len(wa), len(wb))))


_VERB_WORDS = "is are was were has have had will can does did lives live works work moved likes loves plays called named"
_VERBS = frozenset(_VERB_WORDS.split())


def _subject(text: str) -> tuple[str, ...] | None:
    """Whom or what a fact about the user is about, as content words in order: "The user's
    favorite food is sushi." → (favorite, food); "The user's cat's name is Luna." → (cat, name);
    "The user lives in Lyon." → () (the user). None for a fact put otherwise ("Stella is the
    cat's new name."): its subject is not known."""
    words = normalized_words(text)
    if words[:1] == ["the"]:
        words = words[1:]
    if words[:1] == ["user"]:
        return ()
    if words[:1] != ["user's"]:
        return None
    subject: list[str] = []
    for w in words[1:4]:
        if w in _VERBS:
            break
        subject += sorted(content_words(w))
    return tuple(subject)


def _same_subject(a: str, b: str) -> bool:
    """Whether two facts may be about the same thing: the same subject, or one that goes on from
    the other's ("cat" and "cat's name"), or one not known. A small model names topics loosely
    ("home" for where the user's brother lives, "favorite" for a food and for a color)."""
    sa, sb = _subject(a), _subject(b)
    if sa is None or sb is None or sa == sb:
        return True
    short, long = sorted((sa, sb), key=len)
    return bool(short) and long[: len(short)] == short


# --- the store ----------------------------------------------------------------------------------

_locks: dict[Path, threading.RLock] = {}
_locks_lock = threading.Lock()


def _lock_for(path: Path) -> threading.RLock:
    with _locks_lock:
        return _locks.setdefault(path.resolve(), threading.RLock())


class MemoryStore:
    """The items in one file. Every call reads the file and writes it back whole (it is small),
    under a lock shared by every store of the same file in this process (the back-end writes
    while the Memory dialog edits)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or memory_path()
        self.notice = ""  # what the user must be told (a damaged file set aside), once
        self._lock = _lock_for(self.path)

    def items(self) -> list[MemoryItem]:
        with self._lock:
            return self._read()

    def _read(self) -> list[MemoryItem]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as e:
            self.notice = f"cannot read the memory file {self.path} ({e.strerror or type(e).__name__}): memory is empty until it can"
            return []
        try:
            data = json.loads(raw.decode("utf-8"))
            if not isinstance(data, dict) or not isinstance(data.get("items"), list):
                raise ValueError("no items")
            return [MemoryItem.from_json(row) for row in data["items"]]
        except (ValueError, TypeError) as e:  # not JSON, not UTF-8, not a memory
            return self._set_aside(type(e).__name__)

    def _set_aside(self, why: str) -> list[MemoryItem]:
        bad = self.path.with_name(f"{self.path.name}.bad-{datetime.now():%Y%m%d-%H%M%S}")
        try:
            os.replace(self.path, bad)
        except OSError as e:
            self.notice = (f"the memory file {self.path} is damaged and could not be moved aside "
                           f"({e.strerror or type(e).__name__}): memory is off until it is removed")
            raise MemoryFileError(self.notice) from None
        log.warning("the memory file was damaged (%s): set aside as %s; a fresh memory starts", why, bad.name)
        self.notice = f"the memory file was damaged: it is kept as {bad} and a fresh memory starts"
        return []

    def _write(self, items: list[MemoryItem]) -> None:
        data = {"version": MEMORY_VERSION, "items": [i.to_json() for i in items]}
        atomic_write_bytes(self.path, json.dumps(data, indent=1, ensure_ascii=False).encode("utf-8"), mode=0o600)

    def remember(self, topic: str, text: str, *, conversation: str = "", how: str = "said") -> tuple[MemoryItem, str]:
        """Keep a fact: (the item, "added" | "merged" | "replaced")."""
        text = " ".join(text.split())[:MAX_TEXT]
        if not text:
            raise ValueError("an empty memory item")
        topic = " ".join(topic.split())[:60] or " ".join(text.split()[:3])
        key, now = topic_key(topic), _now()
        with self._lock:
            items = self._read()
            for n, old in enumerate(items):
                if normalized_words(old.text) == normalized_words(text):
                    items[n] = dataclasses.replace(old, updated=now, uses=old.uses + 1)
                    self._write(items)
                    return items[n], "merged"
            for n, old in enumerate(items):
                if (topic_key(old.topic) == key or _same_sentence(old.text, text)) and _same_subject(old.text, text):
                    items[n] = dataclasses.replace(old, topic=topic, text=text, updated=now, conversation=conversation,
                                                   how=how)
                    self._write(items)
                    return items[n], "replaced"
            item = MemoryItem(secrets.token_hex(4), topic, text, now, now, conversation, how)
            self._write([*items, item])
            return item, "added"

    def forget(self, what: str) -> list[MemoryItem]:
        """Remove the items `what` names: by topic, or by the words it shares with their text
        (all of its content words, or most of a short item's)."""
        key, wanted = topic_key(what), content_words(what)
        with self._lock:
            items = self._read()
            gone = [i for i in items if topic_key(i.topic) == key or _names(wanted, i)]
            if gone:
                self._write([i for i in items if i not in gone])
            return gone

    def edit(self, item_id: str, text: str, topic: str | None = None) -> MemoryItem | None:
        text = " ".join(text.split())[:MAX_TEXT]
        with self._lock:
            items = self._read()
            for n, old in enumerate(items):
                if old.id == item_id:
                    if not text:  # an emptied item is a deleted one
                        self._write(items[:n] + items[n + 1 :])
                        return None
                    items[n] = dataclasses.replace(old, text=text, topic=topic if topic is not None else old.topic,
                                                   updated=_now(), how="typed")
                    self._write(items)
                    return items[n]
            return None

    def delete(self, item_ids: set[str] | list[str]) -> int:
        ids = set(item_ids)
        with self._lock:
            items = self._read()
            kept = [i for i in items if i.id not in ids]
            if len(kept) != len(items):
                self._write(kept)
            return len(items) - len(kept)

    def clear(self) -> None:
        with self._lock:
            self._write([])

    def used(self, item_ids: set[str]) -> None:
        """These items were recalled: they rank higher next time."""
        with self._lock:
            items = self._read()
            if any(i.id in item_ids for i in items):
                self._write([dataclasses.replace(i, uses=i.uses + 1) if i.id in item_ids else i for i in items])

    def export(self, path: Path) -> int:
        """The items as JSON at `path` (0600: they are the user's); how many."""
        items = self.items()
        data = {"version": MEMORY_VERSION, "exported": _now(), "items": [i.to_json() for i in items]}
        atomic_write_bytes(path, json.dumps(data, indent=2, ensure_ascii=False).encode("utf-8"), mode=0o600)
        return len(items)


def _names(wanted: set[str], item: MemoryItem) -> bool:
    have = content_words(f"{item.topic} {item.text}")
    return bool(wanted) and (wanted <= have or len(wanted & have) >= max(2, round(0.6 * len(wanted))))


class MemoryFileError(OSError):
    """The memory file is damaged and cannot be moved aside."""


def ranked(items: list[MemoryItem]) -> list[MemoryItem]:
    """Newest and most used first: by the day it was last kept or used, then by uses, then time."""
    return sorted(items, key=lambda i: (i.updated[:10], i.uses, i.updated), reverse=True)


def choose(items: list[MemoryItem], count: Callable[[str], int], budget: int) -> list[MemoryItem]:
    chosen, left = [], budget
    for item in ranked(items):
        cost = count(item.text) + 2  # "- " and the newline
        if cost <= left:
            chosen.append(item)
            left -= cost
    return chosen


MEMORY_HEADER = ("What you know about the User from earlier conversations (use it when it helps or when "
                 "asked what you know; never recite it unasked):")


def prompt_block(items: list[MemoryItem]) -> str:
    return "" if not items else "\n\n" + MEMORY_HEADER + "".join(f"\n- {i.text}" for i in items)


# --- writing from what the user said -------------------------------------------------------------

EXTRACT_PROMPT = """\
You keep notes about the user for a voice assistant. Reply to what the user said with one line per fact to keep:
remember TOPIC = FACT
forget TOPIC
or the one word none (a question, a request, small talk). TOPIC is one or two words."""

# The examples are turns of their own (a small model follows turns better than examples inside
# the instructions), with names and places the `memory` eval set does not use. The known notes
# are not shown: Qwen2.5-Coder-1.5B (greedy) answered most new facts by repeating a known note
# ("I work as a nurse." → "name = The user's name is Daniel."), and a correction shown its old
# note by forgetting it; the store replaces an item by its topic or sentence instead (remember).
EXTRACT_EXAMPLES = (
    ("My name is Tom.", "remember name = The user's name is Tom."),
    ("I moved to Lisbon.", "remember home = The user lives in Lisbon."),
    ("Remember that the dentist is on Friday.", "remember dentist = The dentist appointment is on Friday."),
    ("Tell me a joke.", "none"),
    ("My son works in Porto.", "remember son = The user's son works in Porto."),
    ("I like jazz.", "remember music = The user likes jazz."),
    ("Forget about the dentist.", "forget dentist"),
    ("Actually, my boss is Eva now.", "remember boss = The user's boss is Eva."),
    ("Thanks, that sounds good.", "none"),
)
MAX_LINES = 3  # a model that goes on past this many lines is repeating itself: stop reading
_ASK_WORDS = ("remember", "note", "don't forget", "do not forget", "keep in mind")
_FORGET_WORDS = ("forget", "delete", "remove", "erase")
_ABOUT_USER = re.compile(r"\b(user|user's|i|i'm|my|me|mine)\b", re.IGNORECASE)
_THEIRS = re.compile(r"\b(?:my|our)\s+([\w']+)", re.IGNORECASE)
_LINE = re.compile(r"^\W*(?:(remember|forget)\b\W*)?(.*?)\s*(?:=\s*(.*))?$", re.IGNORECASE)


@dataclass(frozen=True)
class Change:
    action: str  # "remember" | "forget"
    topic: str
    text: str = ""


def parse_extraction(answer: str, said: str, rejected: list[str] | None = None) -> list[Change]:
    """The model's lines, kept only where they come from what the user `said`: a fact must be
    about the user (or asked to be remembered) and share a word with their words; a forget
    needs the user to have asked for it. A small model answers questions here and copies its
    examples: those lines go (with why, into `rejected` when given)."""
    lowered = said.lower()
    asked = any(w in lowered for w in _ASK_WORDS)
    forgetting = any(re.search(rf"\b{w}\b", lowered) for w in _FORGET_WORDS)
    heard = content_words(said)
    # What the user calls theirs ("my cat"): a fact about it is about them ("Stella is the cat's new name.").
    theirs = content_words(" ".join(_THEIRS.findall(said)))
    out: list[Change] = []

    def reject(line: str, why: str) -> None:
        if rejected is not None:
            rejected.append(f"{line} ({why})")

    for line in answer.splitlines():
        line = line.strip().strip("`").strip()
        if not line or line.lower().rstrip(".") == "none":
            continue
        m = _LINE.match(line)
        if m is None:
            continue
        verb, topic, fact = (m.group(1) or "").lower(), m.group(2).strip(" :."), (m.group(3) or "").strip()
        if verb == "forget" or (not fact and verb != "remember"):
            if forgetting and topic and verb == "forget":
                out.append(Change("forget", topic))
            else:
                reject(line, "not asked to forget" if verb == "forget" else "no fact")
            continue
        if not fact or not topic:
            reject(line, "no topic or no fact")
            continue
        if len(fact.split()) <= 4 and not _ABOUT_USER.search(fact) and not said.rstrip().endswith("?"):
            fact = f"the user's {topic} is {fact}"  # a bare value ("name = Daniel"), told in a statement
        if not (content_words(f"{topic} {fact}") & heard):
            reject(line, "no word of what was said")  # a note repeated, an answer to a question
        elif _names_not_said(fact, lowered):
            reject(line, "a name or number not said")  # a small model copies its examples
        elif not (asked or _ABOUT_USER.search(fact) or content_words(f"{topic} {fact}") & theirs):
            reject(line, "not about the user")
        else:
            out.append(Change("remember", topic, third_person(fact)))
    return out


_SENTENCE = re.compile(r"[^.!?]+[.!?]*")
_ASKS_TO_KEEP = re.compile(r"\b(remember|forget|note|delete|remove|erase|keep in mind)\b", re.IGNORECASE)


def to_keep(said: str) -> str:
    """The words that may hold something to keep, "" when none (no request): the user's
    statements, and any question that asks to remember or forget. Other questions hold no fact
    to keep, and a small model asked about one ("What is my name?") writes a note all the same."""
    sentences = (s.strip() for s in _SENTENCE.findall(said))
    return " ".join(s for s in sentences if s and (not s.endswith("?") or _ASKS_TO_KEEP.search(s)))


def _names_not_said(fact: str, said: str) -> bool:
    """Whether `fact` holds a name (a capitalised word past its first) or a number that `said`
    does not (a number said in words counts: "May third" is "May 3rd")."""
    heard = set(normalized_words(said))
    for n, word in enumerate(fact.split()):
        w = re.sub(r"[^\w']", "", word).removesuffix("'s")
        named = n > 0 and w[:1].isupper() and w.lower() not in ("user", "i")
        if (named or any(c.isdigit() for c in w)) and w.lower() not in heard and not _said_in_words(w, heard):
            return True
    return False


_UNITS = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"
)
_UNIT_ORDINALS = (
    "zeroth", "first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth",
    "eleventh", "twelfth", "thirteenth", "fourteenth", "fifteenth", "sixteenth", "seventeenth", "eighteenth",
    "nineteenth"
)
_TENS = {2: "twenty", 3: "thirty"}


def _said_in_words(number: str, heard: set[str]) -> bool:
    """Whether a number the model wrote in digits ("4", "3rd") was said another way ("four",
    "third", "3"), as the recognizer may write it; in words up to 39 (days, levels, ages)."""
    m = re.fullmatch(r"(\d+)(st|nd|rd|th)?", number.lower())
    if m is None or m.group(1) in heard:
        return m is not None
    if int(m.group(1)) > 39:
        return False
    n, ordinal = int(m.group(1)), bool(m.group(2))
    if n < 20:
        word = (_UNIT_ORDINALS if ordinal else _UNITS)[n]
    else:
        tens, unit = divmod(n, 10)
        ends = "ieth" if ordinal else "y"
        word = (_TENS[tens][:-1] + ends if not unit else
                f"{_TENS[tens]}-{(_UNIT_ORDINALS if ordinal else _UNITS)[unit]}")
    return word.replace("-", "") in heard or all(w in heard for w in word.split("-"))


def _extract_request(said: str) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": EXTRACT_PROMPT}]
    for example, answer in EXTRACT_EXAMPLES:
        messages += [{"role": "user", "content": example}, {"role": "assistant", "content": answer}]
    return [*messages, {"role": "user", "content": said}]


QUIET_S = 0.8  # the companion has been quiet this long after the answer: the back-end is idle
SILENT_TURN_S = 4.0  # nothing was said after the turn: idle all the same after this long
CHECK_S = 0.05
FLUSH_S = 20.0  # at the end of a session, how long keeping what was said may take
MAX_TRIES = 3


class MemoryKeeper:
    """One back-end's memory: what the current conversation's prompt holds, the items kept
    during it, and (without tools) the requests that keep what the user said. Runs on the
    back-end's loop."""

    def __init__(self, store: MemoryStore, *, extract: bool = True, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.extract = extract  # False: the remember/forget tools write instead
        self.clock = clock
        self.conversation = _now()
        self.chosen: list[MemoryItem] = []
        self.joined: list[str] = []  # notes for the items kept or forgotten during this conversation
        self.said_at = float("-inf")  # the companion's last words
        self.idle_since: float | None = None
        self.kept = 0  # items written (a count: never the text)
        self._seen: tuple[int, int] = (0, 0)  # (conversation line, characters) read up to
        self._manager: OracleManager | None = None
        self._llm: LlmProvider | None = None
        self._task: asyncio.Task | None = None
        self._failures = 0  # failed tries for the words pending
        # What each read asked and what came of it (the words, the model's reply, what was kept and
        # what not, and why), for `eval` to keep in its own folder. None (the app): nothing is kept.
        self.journal: list[dict[str, Any]] | None = None

    # --- the prompt -----------------------------------------------------------------------------

    def system_prompt(self, base: str, count: Callable[[str], int], budget: int = PROMPT_TOKENS) -> str:
        """`base` with the items chosen for a new conversation (once: the prompt then stays the same)."""
        self.conversation = _now()
        self.joined.clear()
        self._seen = (0, 0)
        try:
            self.chosen = choose(self.store.items(), count, budget)
        except MemoryFileError:
            self.chosen = []
        return base + prompt_block(self.chosen)

    def notes(self) -> str:
        """The items kept or forgotten since the conversation's prompt was chosen."""
        return "" if not self.joined else f"(Notes about me since we started: {' '.join(self.joined)})"

    def kept_item(self, item: MemoryItem) -> None:
        self.kept += 1
        self.joined.append(item.text)

    def forgot(self, items: list[MemoryItem]) -> None:
        self.joined += [f"Forget that: {i.text}" for i in items]

    # --- writing without tools --------------------------------------------------------------------

    def said(self) -> None:
        """The companion said something (the front-end played it)."""
        self.said_at = self.clock()

    def new_conversation(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._seen = (0, 0)

    def pending(self) -> str:
        """The user's final words not yet read for memory."""
        if self._manager is None:
            return ""
        lines = self._manager.conversation.lines
        index, chars = self._seen
        if index > len(lines):
            index, chars = len(lines), 0
        texts = []
        for n in range(index, len(lines)):
            speaker, text = lines[n]
            if speaker == "user":
                texts.append(text[chars:] if n == index else text)
        return " ".join(" ".join(texts).split())

    def _mark_read(self) -> None:
        assert self._manager is not None
        lines = self._manager.conversation.lines
        self._seen = (len(lines) - 1, len(lines[-1][1])) if lines else (0, 0)

    def _idle(self) -> bool:
        assert self._manager is not None
        now = self.clock()
        if self._manager.busy():
            self.idle_since = None
            return False
        if self.idle_since is None:
            self.idle_since = now
        spoke = self.said_at >= self.idle_since - 1.0  # the answer was (being) spoken
        return (spoke and now - self.said_at >= QUIET_S) or now - self.idle_since >= SILENT_TURN_S

    async def run(self, manager: OracleManager, llm: LlmProvider) -> None:
        """Keep what the user says (without tools): each time the back-end is idle with new final
        words, one request; dropped at once when the user talks again (its words wait)."""
        self._manager, self._llm = manager, llm
        if not self.extract:
            return
        while True:
            await asyncio.sleep(CHECK_S)
            if not self.pending() or not self._idle() or not self._worth_asking():
                continue
            self._task = asyncio.get_running_loop().create_task(self._keep(self.pending()))
            while not self._task.done():
                await asyncio.sleep(CHECK_S)
                if manager.busy():
                    self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _worth_asking(self) -> bool:
        """Whether the pending words hold anything to keep; if not, they are read (no request)."""
        if to_keep(said := self.pending()):
            return True
        if self.journal is not None:
            self.journal.append({"said": said, "asked": ""})
        self._mark_read()
        return False

    async def flush(self, timeout: float = FLUSH_S) -> None:
        """The session ends: keep what the user said and was not read yet (within `timeout`)."""
        if self._task is not None:
            self._task.cancel()
        if not self.extract or self._manager is None or not self.pending() or not self._worth_asking():
            return
        deadline = asyncio.get_running_loop().time() + timeout
        with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
            while (said := self.pending()) and (left := deadline - asyncio.get_running_loop().time()) > 0:
                await asyncio.wait_for(self._keep(said, reprime=False), left)

    async def _keep(self, said: str, reprime: bool = True) -> None:
        from kame_desktop.errors import KameError

        assert self._llm is not None and self._manager is not None
        asked = to_keep(said)
        entry: dict[str, Any] = {"said": said, "asked": asked}
        if self.journal is not None:
            self.journal.append(entry)
        answer = ""
        try:
            stream = self._llm.stream(_extract_request(asked), None)
            try:
                async for chunk in stream:
                    if isinstance(chunk, str):
                        answer += chunk
                        if answer.count("\n") >= MAX_LINES:
                            break  # one line per fact: a model going on is repeating itself
            finally:
                aclose = getattr(stream, "aclose", None)
                if aclose is not None:
                    await aclose()
        except KameError as e:
            # A busy machine may keep the model past its first-chunk limit: what it read of the
            # request stays read (llama.cpp's cache), so the next try is quicker. Then dropped.
            self._failures += 1
            entry["error"] = type(e).__name__
            if not getattr(e, "retryable", False) or self._failures >= MAX_TRIES:
                log.warning("memory: could not read the last turn for memory (%s)", type(e).__name__)
                self._mark_read()
            return
        self._failures = 0
        self._mark_read()
        rejected: list[str] = []
        changes = parse_extraction(answer, asked, rejected)
        entry |= {"reply": answer, "changes": [dataclasses.asdict(c) for c in changes], "rejected": rejected}
        # Counts only, never the words: what the model wrote and what of it was kept.
        log.debug("memory: the model wrote %d line(s); %d kept", len(answer.strip().splitlines()), len(changes))
        self.apply(changes, how="said")
        if reprime and not self._llm.overlaps:  # the next answer finds its prompt read
            await self._llm.prime(self._manager.system_prompt, self._manager.tools.schemas() if self._manager.tools else None)

    def apply(self, changes: list[Change], how: str) -> None:
        for change in changes:
            try:
                if change.action == "forget":
                    self.forgot(self.store.forget(change.topic))
                else:
                    item, _ = self.store.remember(change.topic, change.text, conversation=self.conversation, how=how)
                    self.kept_item(item)
            except (OSError, ValueError) as e:
                log.warning("memory: an item could not be written (%s)", type(e).__name__)
        if changes:
            log.info("memory: %d change(s) from the last turn", len(changes))
