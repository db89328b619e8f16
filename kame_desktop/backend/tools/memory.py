"""`remember`, `forget` and `recall`: the memory tools (backend/memory.py), offered with the other
tools when memory is on. Bound to one back-end's MemoryKeeper (which conversation an item came
from, and the notes that let an item join the conversation at the next turn); remember and
forget change something, so TurnTools runs them only on the turn's final words, once."""

from __future__ import annotations

from kame_desktop.backend.memory import MemoryFileError, MemoryKeeper, ranked, third_person
from kame_desktop.backend.tools.base import Tool, ToolFailed, object_schema

RECALL_MAX = 30
NAMES = ("remember", "forget", "recall")


def memory_tools(keeper: MemoryKeeper) -> tuple[Tool, ...]:
    store = keeper.store

    def remember(topic: str, fact: str) -> str:
        if not str(fact).strip():
            raise ToolFailed("there is nothing to remember")
        try:
            item, how = store.remember(str(topic), third_person(str(fact)), conversation=keeper.conversation, how="tool")
        except (OSError, ValueError) as e:
            raise ToolFailed(f"cannot write the memory ({type(e).__name__})") from None
        keeper.kept_item(item)
        return f"{'remembered' if how == 'added' else 'updated'}: {item.text}"

    def forget(what: str) -> str:
        try:
            gone = store.forget(str(what))
        except (OSError, ValueError) as e:
            raise ToolFailed(f"cannot write the memory ({type(e).__name__})") from None
        keeper.forgot(gone)
        return f"forgot {len(gone)} item(s): " + "; ".join(i.text for i in gone) if gone else "nothing like that was remembered"

    def recall() -> str:
        try:
            items = ranked(store.items())[:RECALL_MAX]
        except MemoryFileError as e:
            raise ToolFailed(str(e)) from None
        store.used({i.id for i in items})
        return "\n".join(i.text for i in items) if items else "nothing is remembered about the user yet"

    return (
        Tool("remember", "Remember a fact about the user, or something they ask you to remember, for later conversations.",
             object_schema(("topic", "fact"), topic={"type": "string", "description": "one or two words, e.g. home, name"},
                           fact={"type": "string", "description": "the fact as one sentence about the user"}),
             remember, read_only=False),
        Tool("forget", "Forget something the user asks you to forget.",
             object_schema(("what",), what={"type": "string", "description": "the topic or words of what to forget"}),
             forget, read_only=False),
        Tool("recall", "Everything you remember about the user.", object_schema(), recall),
    )
