"""State changes of /dev/liveupdate, from the kernel's uevents (pyroute2)."""

from __future__ import annotations

import select
import time
from collections.abc import Iterator
from dataclasses import dataclass

from pyroute2.netlink.uevent import MONITOR_GROUP_KERNEL, UeventSocket


@dataclass(frozen=True)
class StateChange:
    """One transition: the event that caused it and the state it led to."""

    state: str
    event: str
    devpath: str


def state_changes(timeout: float | None = None) -> Iterator[StateChange]:
    """Yield each transition as the kernel announces it.

    Stops after ``timeout`` seconds without one (None: never). Subscribe
    before causing the transition: uevents are not queued for late readers.
    """
    sock = UeventSocket()
    try:
        sock.bind(groups=MONITOR_GROUP_KERNEL)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                return
            ready, _, _ = select.select([sock], [], [], wait)
            if not ready:
                continue
            for msg in sock.get():
                state = msg.get("LIVEUPDATE_STATE")
                if state:
                    yield StateChange(state, msg.get("LIVEUPDATE_EVENT", ""), msg.get("DEVPATH", ""))
                    if timeout is not None:
                        deadline = time.monotonic() + timeout
    finally:
        sock.close()
