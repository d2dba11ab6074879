"""State changes of /dev/liveupdate, from the kernel's uevents.

One uevent is one netlink datagram: this module reads them one by one from
a plain NETLINK_KOBJECT_UEVENT socket and lets pyroute2 parse each. (Its
own socket reads ahead into a buffer that select() cannot see, so a burst
of uevents was partly lost.) The receive buffer is enlarged so that a burst
fits in it while the reader is busy.
"""

from __future__ import annotations

import contextlib
import select
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

from pyroute2.netlink import NETLINK_KOBJECT_UEVENT
from pyroute2.netlink.uevent import MONITOR_GROUP_KERNEL, MarshalUevent

RECEIVE_BUFFER = 4 << 20
MAX_UEVENT = 64 << 10


@dataclass(frozen=True)
class StateChange:
    """One transition: the event that caused it and the state it led to."""

    state: str
    event: str
    devpath: str


class Watcher:
    """Subscribed to the kernel's uevents from creation until close()."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_KOBJECT_UEVENT)
        try:
            # As root, beyond rmem_max; otherwise as much as allowed.
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.SOL_SOCKET, 33, RECEIVE_BUFFER)  # SO_RCVBUFFORCE
            self.sock.bind((0, MONITOR_GROUP_KERNEL))
        except BaseException:
            self.sock.close()
            raise
        self.marshal = MarshalUevent()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Watcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _change(self, datagram: bytes) -> StateChange | None:
        for msg in self.marshal.parse(datagram):
            state = msg.get("LIVEUPDATE_STATE")
            if state:
                return StateChange(state, msg.get("LIVEUPDATE_EVENT", ""), msg.get("DEVPATH", ""))
        return None

    def changes(self, timeout: float | None = None) -> Iterator[StateChange]:
        """Yield each transition; stop after ``timeout`` seconds without one (None: never)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                return
            ready, _, _ = select.select([self.sock], [], [], wait)
            if not ready:
                continue
            change = self._change(self.sock.recv(MAX_UEVENT))
            if change is not None:
                yield change
                if timeout is not None:
                    deadline = time.monotonic() + timeout


def state_changes(timeout: float | None = None) -> Iterator[StateChange]:
    """Yield each transition as the kernel announces it.

    Stops after ``timeout`` seconds without one (None: never). Subscribe
    before causing the transition (a Watcher subscribes when created):
    uevents are not queued for late readers.
    """
    with Watcher() as watcher:
        yield from watcher.changes(timeout)
