"""The client side of the agent: what services call.

    with liveupdate.connect() as agent:
        agent.preserve("vm1", memfd, token=1)      # before the update
    ...
    with liveupdate.connect() as agent:
        fd = agent.retrieve("vm1", token=1)        # after it
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Sequence
from typing import Any

from . import listing, protocol
from .device import FileLike, _fileno
from .errors import LiveUpdateError


class AgentClient:
    """A connection to liveupdated."""

    def __init__(self, path: str = protocol.DEFAULT_SOCKET) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            self.sock.connect(path)
        except OSError as e:
            self.sock.close()
            raise LiveUpdateError(
                e.errno or 0, f"connect {path}", "is the agent running? python -m liveupdate agent"
            ) from None
        self.call("hello")

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, op: str, fds: Sequence[int] = (), **fields: Any) -> tuple[dict[str, Any], list[int]]:
        """One request and its reply; a refusal raises LiveUpdateError with the agent's reason."""
        try:
            protocol.send(self.sock, {"op": op, **fields}, list(fds))
            received = protocol.receive(self.sock)
        except protocol.ProtocolError as e:
            for fd in e.fds:
                os.close(fd)
            raise LiveUpdateError(e.errno, f"agent {op}", str(e)) from None
        if received is None:
            raise LiveUpdateError(errno.ECONNRESET, f"agent {op}", "the agent closed the connection")
        reply, got = received
        if not reply.get("ok"):
            for fd in got:
                os.close(fd)
            raise LiveUpdateError(int(reply.get("errno") or 0), f"agent {op}", str(reply.get("error", "")))
        return reply, got

    def preserve(self, session: str, file: FileLike, token: int, deps: Sequence[int] = ()) -> None:
        """Hand ``file`` to the agent, to be carried in ``session`` under ``token``."""
        self.call("preserve", [_fileno(file)], session=session, token=token, deps=list(deps))

    def retrieve(self, session: str, token: int) -> int:
        """After the kexec: the fd preserved under ``token`` (the caller owns it)."""
        _, fds = self.call("retrieve", session=session, token=token)
        if len(fds) != 1:
            raise LiveUpdateError(errno.EPROTO, "agent retrieve", "the reply carried no fd")
        return fds[0]

    def sessions(self) -> list[dict[str, Any]]:
        """The sessions this client may see, every page of them."""
        pages, after = [], None
        while True:
            reply = self.call("list", after=after)[0]
            pages.append(reply["sessions"])
            after = reply.get("next")
            if after is None:
                return listing.merge(pages)

    def status(self) -> dict[str, Any]:
        return self.call("status")[0]

    def event(self, event: str) -> dict[str, Any]:
        return self.call("event", event=event)[0]


def connect(path: str = protocol.DEFAULT_SOCKET) -> AgentClient:
    """Connect to the agent (liveupdated)."""
    return AgentClient(path)
