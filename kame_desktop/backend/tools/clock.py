"""The date and time, in the user's own time zone (the computer's)."""

from __future__ import annotations

from datetime import datetime

from kame_desktop.backend.tools.base import Tool, object_schema


def now() -> datetime:
    return datetime.now().astimezone()  # the system's zone: where the user is


def get_time() -> str:
    t = now()
    offset = t.strftime("%z")
    return (f"{t:%H:%M} ({t:%I:%M %p}) on {t:%A}, {t.day} {t:%B %Y}; time zone {t.tzname()} "
            f"(UTC{offset[:3]}:{offset[3:]})")


TOOLS = (
    Tool("get_time", "The current local time, weekday and date.", object_schema(), get_time),
)
