"""The agent's wire protocol: JSON messages over a SOCK_SEQPACKET unix socket.

One message is one datagram: a UTF-8 JSON object of at most MAX_MESSAGE
bytes, with file descriptors attached as SCM_RIGHTS when the operation
carries one. Requests have an ``op``; every reply has ``ok`` and, when it
is false, ``error`` (a message saying what to do) and ``errno``.

    {"op": "hello"}                                    -> {"ok": true, "version": 1}
    {"op": "status"}                                   -> {"ok": true, "state": "normal", ...}
    {"op": "list", "after": null | cursor}             -> {"ok": true, "sessions": [...], "next": ...}
                                                          (in pages: listing.py)
    {"op": "preserve", "session": S, "token": T, "deps": [..]} + 1 fd -> {"ok": true}
    {"op": "retrieve", "session": S, "token": T}      -> {"ok": true} + 1 fd
    {"op": "event", "event": "prepare"|"freeze"|"cancel"|"finish"} (root only)
                                                       -> {"ok": true, "state": ...}

The agent answers every request, in order, on the connection it came on.
"""

from __future__ import annotations

import errno
import json
import socket
from typing import Any

VERSION = 1
MAX_MESSAGE = 64 * 1024
MAX_FDS = 1
DEFAULT_SOCKET = "/run/liveupdate/agent.sock"


class ProtocolError(Exception):
    """A message that breaks the protocol; ``errno`` says how.

    ``fds`` are descriptors that came with the message: the receiver owns
    them and must close them.
    """

    def __init__(self, message: str, err: int = errno.EPROTO, fds: list[int] | None = None) -> None:
        super().__init__(message)
        self.errno = err
        self.fds = fds or []


def encode(message: dict[str, Any]) -> bytes:
    data = json.dumps(message, separators=(",", ":")).encode()
    if len(data) > MAX_MESSAGE:
        raise ProtocolError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE}", errno.EMSGSIZE)
    return data


def decode(data: bytes) -> dict[str, Any]:
    try:
        message = json.loads(data)
    except RecursionError:
        raise ProtocolError("JSON nested too deeply") from None
    except ValueError as e:  # not UTF-8, not JSON, or an integer of too many digits
        raise ProtocolError(f"not JSON: {e}") from None
    if not isinstance(message, dict):
        raise ProtocolError("a message must be a JSON object")
    return message


def send(sock: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    data = encode(message)
    if fds:
        socket.send_fds(sock, [data], fds)
    else:
        sock.send(data)


def receive(sock: socket.socket) -> tuple[dict[str, Any], list[int]] | None:
    """One message and its fds; None when the peer closed the connection.

    Received fds belong to the caller, also when the message is refused:
    the ProtocolError carries them.
    """
    data, fds, flags, _ = socket.recv_fds(sock, MAX_MESSAGE + 1, MAX_FDS)
    if not data and not fds:
        return None
    if len(data) > MAX_MESSAGE or flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
        raise ProtocolError(f"message larger than {MAX_MESSAGE} bytes or with too many fds", errno.EMSGSIZE, fds)
    try:
        return decode(data), fds
    except ProtocolError as e:
        raise ProtocolError(str(e), e.errno, fds) from None


def error_reply(message: str, err: int) -> dict[str, Any]:
    return {"ok": False, "error": message, "errno": err}
