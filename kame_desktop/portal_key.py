"""The talk key on Wayland: the XDG desktop portal's GlobalShortcuts interface over D-Bus
(jeepney, which keyring already brings on Linux). The desktop, not the app, owns the key: the
app asks for one shortcut, "talk", with the talk key as its preferred trigger, and hears its
Activated / Deactivated signals. Only that shortcut's id is ever looked at.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

PORTAL = "org.freedesktop.portal.Desktop"
PORTAL_PATH = "/org/freedesktop/portal/desktop"
SHORTCUTS = "org.freedesktop.portal.GlobalShortcuts"
SHORTCUT_ID = "talk"
TIMEOUT_S = 5.0
BIND_TIMEOUT_S = 120.0  # the desktop may ask the user to confirm the shortcut

# Qt key names -> XKB keysym names (the portal's trigger syntax); letters and digits are themselves.
KEYSYMS = {
    "Space": "space", "Pause": "Pause", "ScrollLock": "Scroll_Lock", "Ins": "Insert", "Del": "Delete",
    "Home": "Home", "End": "End", "PgUp": "Prior", "PgDown": "Next", "Menu": "Menu", "CapsLock": "Caps_Lock",
    "NumLock": "Num_Lock", "Print": "Print", "Backspace": "BackSpace", "Return": "Return", "Enter": "KP_Enter",
    "Left": "Left", "Right": "Right", "Up": "Up", "Down": "Down", **{f"F{n}": f"F{n}" for n in range(1, 21)},
}


def trigger_for(key_name: str) -> str:
    return KEYSYMS.get(key_name, key_name.lower())


def _call(conn: Any, member: str, signature: str, body: tuple, timeout: float = TIMEOUT_S) -> tuple:
    from jeepney import DBusAddress, HeaderFields, MessageType, new_method_call

    addr = DBusAddress(PORTAL_PATH, bus_name=PORTAL, interface=SHORTCUTS if member != "Get" else "org.freedesktop.DBus.Properties")
    reply = conn.send_and_get_reply(new_method_call(addr, member, signature, body), timeout=timeout)
    if reply.header.message_type == MessageType.error:
        raise RuntimeError(f"{member}: {reply.header.fields.get(HeaderFields.error_name, 'D-Bus error')}")
    return reply.body


def portal_version() -> tuple[int, str]:
    """The GlobalShortcuts portal's version on the session bus (0, and why, when there is none)."""
    try:
        from jeepney.io.blocking import open_dbus_connection
    except ImportError:
        return 0, "jeepney is not installed"
    try:
        conn = open_dbus_connection(bus="SESSION")
    except Exception as e:  # no session bus address, or it refused
        return 0, f"no D-Bus session bus: {type(e).__name__}"
    try:
        (value,) = _call(conn, "Get", "ss", (SHORTCUTS, "version"))
        return int(value[1]), ""
    except Exception as e:  # no portal, or one without this interface
        return 0, f"the portal offers no GlobalShortcuts: {str(e)[:120] or type(e).__name__}"
    finally:
        conn.close()


class PortalTalkKey:
    """Binds the talk key through the portal; `on_change(True/False)` from its own thread."""

    def __init__(self, key_name: str, on_change: Callable[[bool], None]) -> None:
        self.key_name = key_name
        self._on_change = on_change
        self._stop = threading.Event()
        self._conn: Any = None
        self._thread: threading.Thread | None = None
        self._down = False

    def _request(self, conn: Any, member: str, signature: str, body_of: Callable[[str], tuple], timeout: float) -> dict:
        """A portal call that answers through a Request object's Response signal."""
        from jeepney import MatchRule, message_bus
        from jeepney.io.blocking import Proxy

        token = "kame_" + secrets.token_hex(6)
        sender = conn.unique_name.lstrip(":").replace(".", "_")
        rule = MatchRule(type="signal", interface="org.freedesktop.portal.Request", member="Response",
                         path=f"{PORTAL_PATH}/request/{sender}/{token}")
        Proxy(message_bus, conn).AddMatch(rule)
        with conn.filter(rule) as queue:
            _call(conn, member, signature, body_of(token))
            response, results = conn.recv_until_filtered(queue, timeout=timeout).body
        if response != 0:
            raise RuntimeError(f"{member} was {'cancelled' if response == 1 else 'refused'} by the desktop")
        return {k: v[1] for k, v in results.items()}

    def start(self) -> str | None:
        from jeepney import MatchRule, message_bus
        from jeepney.io.blocking import Proxy, open_dbus_connection

        try:
            conn = open_dbus_connection(bus="SESSION")
            session = self._request(conn, "CreateSession", "a{sv}", lambda t: (
                {"handle_token": ("s", t), "session_handle_token": ("s", t)},), TIMEOUT_S)["session_handle"]
            shortcut = (SHORTCUT_ID, {"description": ("s", "Push to talk (kame-desktop)"),
                                      "preferred_trigger": ("s", trigger_for(self.key_name))})
            bound = self._request(conn, "BindShortcuts", "oa(sa{sv})sa{sv}", lambda t: (
                session, [shortcut], "", {"handle_token": ("s", t)}), BIND_TIMEOUT_S)
        except Exception as e:
            return f"the desktop did not give the talk key {self.key_name}: {str(e)[:160] or type(e).__name__}"
        if not any(s[0] == SHORTCUT_ID for s in bound.get("shortcuts", [])):
            conn.close()
            return f"the desktop did not give the talk key {self.key_name} (another shortcut may hold it)"
        rule = MatchRule(type="signal", interface=SHORTCUTS, path=PORTAL_PATH)
        Proxy(message_bus, conn).AddMatch(rule)
        self._conn = conn
        self._thread = threading.Thread(target=self._listen, args=(conn, rule, session), daemon=True, name="talk-key-portal")
        self._thread.start()
        log.info("global talk key %s: bound through the desktop portal", self.key_name)
        return None

    def _listen(self, conn: Any, rule: Any, session: str) -> None:
        from jeepney import HeaderFields

        with conn.filter(rule, bufsize=64) as queue:
            while not self._stop.is_set():
                try:
                    msg = conn.recv_until_filtered(queue, timeout=0.5)
                except TimeoutError:
                    continue
                except Exception:  # the bus went away
                    break
                member = msg.header.fields.get(HeaderFields.member)
                if member in ("Activated", "Deactivated") and msg.body[:2] == (session, SHORTCUT_ID):
                    self._set(member == "Activated")
        self._set(False)

    def _set(self, down: bool) -> None:
        if down != self._down:
            self._down = down
            self._on_change(down)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        if self._conn is not None:
            self._conn.close()
            self._conn = None
