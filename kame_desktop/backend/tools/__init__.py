"""Tools the oracle LLM may call: the built-ins are one module each, with a TOOLS tuple. Adding
a tool is one file plus its module's name in BUILTIN_MODULES."""

from __future__ import annotations

import importlib

from kame_desktop.backend.tools.base import Tool, ToolCall, ToolResult, TurnTools

BUILTIN_MODULES = ("clock", "calculator", "timers", "notes")

__all__ = ["BUILTIN_MODULES", "Tool", "ToolCall", "ToolResult", "TurnTools", "builtin_tools", "enabled_tools"]


def builtin_tools() -> list[Tool]:
    tools: list[Tool] = []
    for name in BUILTIN_MODULES:
        tools.extend(importlib.import_module(f"kame_desktop.backend.tools.{name}").TOOLS)
    return tools


def enabled_tools(disabled: tuple[str, ...] | list[str] = ()) -> TurnTools:
    return TurnTools({t.name: t for t in builtin_tools() if t.name not in set(disabled)})
