"""The agent's list pages: every session and token once, in order, each page within a message."""

from __future__ import annotations

import json
import random

import pytest

from liveupdate import listing, protocol


def every_page(sessions: list[tuple[bool, str, int, list[int]]]) -> list[list[dict[str, object]]]:
    pages, after = [], None
    while True:
        entries, cursor = listing.page(sessions, after)
        # Through JSON, as the client gets it back.
        encoded = protocol.encode({"ok": True, "sessions": entries, "next": cursor})
        reply = json.loads(encoded)
        pages.append(reply["sessions"])
        if reply["next"] is None:
            return pages
        after = listing.parse_cursor(reply["next"])


@pytest.mark.parametrize("seed", range(20))
def test_pages_give_everything_once(seed: int) -> None:
    rng = random.Random(seed)
    sessions = []
    for i in range(rng.choice([0, 1, 63, 64, 65, 300])):
        count = rng.choice([0, 1, 2, 511, 512, 513, 1500]) if i % 7 == 0 else rng.randint(0, 3)
        tokens = list({rng.getrandbits(64) for _ in range(count)})
        sessions.append((bool(rng.getrandbits(1)), f"s{i:04d}", rng.randint(0, 5000), tokens))
    pages = every_page(sessions)
    assert all(len(p) <= listing.PAGE_SESSIONS for p in pages)
    assert all(sum(len(e["tokens"]) for e in p) <= listing.PAGE_TOKENS for p in pages)  # type: ignore[arg-type]
    merged = listing.merge(pages)
    expected = [{"name": n, "owner": o, "incoming": i, "tokens": sorted(t)}
                for i, n, o, t in sorted(sessions, key=lambda s: (s[0], s[1]))]
    assert merged == expected


def test_worst_case_page_fits_in_a_message() -> None:
    # The longest name whose every byte JSON escapes, the largest tokens and owners.
    name = "\x01" * 63
    sessions = [(True, name + str(i), (1 << 32) - 1, [(1 << 64) - 1 - j for j in range(20)]) for i in range(100)]
    entries, cursor = listing.page(sessions, None)
    assert cursor is not None
    protocol.encode({"ok": True, "sessions": entries, "next": list(cursor)})


def test_same_name_incoming_and_outgoing_are_two_sessions() -> None:
    pages = every_page([(False, "vm", 0, [1]), (True, "vm", 0, [2])])
    assert listing.merge(pages) == [{"name": "vm", "owner": 0, "incoming": False, "tokens": [1]},
                                    {"name": "vm", "owner": 0, "incoming": True, "tokens": [2]}]


@pytest.mark.parametrize("after", [[True, "x"], "x", [1, "x", None], [True, 5, None], [True, "x", -1],
                                   [True, "x", 1 << 64], [True, "x", 1.5], [True, "x", True], {"a": 1}])
def test_a_bad_cursor_is_refused(after: object) -> None:
    with pytest.raises(ValueError, match="cursor"):
        listing.parse_cursor(after)
