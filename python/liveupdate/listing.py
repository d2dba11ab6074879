"""The agent's ``list`` reply in pages, each well within one message.

A page holds at most PAGE_SESSIONS sessions and PAGE_TOKENS tokens, which
bounds its size whatever the names (63 bytes, each at most 6 in JSON)
and tokens (20 digits) are. Sessions come sorted by (incoming, name);
one with many tokens continues on the next page. A reply that is not the
last has ``next``, the cursor the client sends back as ``after``:
``[incoming, name, token]``, the last token given of that session, or
null when the session was given whole.

    {"op": "list", "after": null | cursor} -> {"ok": true, "sessions": [...], "next": null | cursor}
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

PAGE_SESSIONS = 32
PAGE_TOKENS = 256
Cursor = tuple[bool, str, int | None]


def parse_cursor(value: Any) -> Cursor | None:
    """A client's ``after``; ValueError names what is wrong with it."""
    if value is None:
        return None
    if isinstance(value, list) and len(value) == 3:
        incoming, name, token = value
        if isinstance(incoming, bool) and isinstance(name, str) and (
                token is None or (type(token) is int and 0 <= token < 1 << 64)):
            return incoming, name, token
    raise ValueError("after: a cursor is [incoming, name, token] as the last page's next")


def page(sessions: Iterable[tuple[bool, str, int, list[int]]],
         after: Cursor | None) -> tuple[list[dict[str, Any]], Cursor | None]:
    """The page after ``after`` of (incoming, name, owner, tokens) and the next cursor."""
    entries: list[dict[str, Any]] = []
    room = PAGE_TOKENS
    cursor: Cursor | None = None
    for incoming, name, owner, tokens in sorted(sessions, key=lambda s: (s[0], s[1])):
        tokens = sorted(tokens)
        if after is not None:
            if (incoming, name) < after[:2]:
                continue
            if (incoming, name) == after[:2]:
                last = after[2]
                tokens = [] if last is None else [t for t in tokens if t > last]
                if not tokens:
                    continue
        if cursor is not None:  # the page is full and this one is left
            return entries, cursor
        given = tokens[:room]
        entries.append({"name": name, "owner": owner, "incoming": incoming, "tokens": given})
        room -= len(given)
        if len(given) < len(tokens):
            return entries, (incoming, name, given[-1])
        if room == 0 or len(entries) == PAGE_SESSIONS:
            cursor = (incoming, name, None)
    return entries, None


def merge(pages: Iterable[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The sessions of every page, a session's continuations joined."""
    found: dict[tuple[bool, str], dict[str, Any]] = {}
    for entries in pages:
        for entry in entries:
            key = (entry["incoming"], entry["name"])
            if key in found:
                found[key]["tokens"] += entry["tokens"]
            else:
                found[key] = dict(entry)
    return list(found.values())
