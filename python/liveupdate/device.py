"""/dev/liveupdate and session fds, over fcntl.ioctl.

Two layers: ``ioctl_call`` packs a struct, runs one ioctl and unpacks the
reply; ``Device`` and ``Session`` wrap each command in a method.
"""

from __future__ import annotations

import array
import fcntl
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from . import abi
from .errors import ioctl_error, open_error

DEVICE_PATH = "/dev/liveupdate"


class HasFileno(Protocol):
    def fileno(self) -> int: ...


FileLike = int | HasFileno


def _fileno(f: FileLike) -> int:
    return f if isinstance(f, int) else f.fileno()


def ioctl_call(fd: int, number: int, layout: struct.Struct, *fields: object) -> tuple[Any, ...]:
    """Run one ioctl whose struct starts with ``__u32 size``.

    ``fields`` are the members after ``size``; returns all members as the
    kernel left them. Raises OSError with the kernel's errno.
    """
    buf = bytearray(layout.pack(layout.size, *fields))
    fcntl.ioctl(fd, number, buf, True)
    return layout.unpack(buf)


def _encode_name(name: str) -> bytes:
    raw = name.encode()
    if not raw or len(raw) >= abi.SESSION_NAME_LENGTH or b"\0" in raw:
        raise ValueError(f"session name must be 1 to {abi.SESSION_NAME_LENGTH - 1} bytes without NUL: {name!r}")
    return raw


def _check_token(token: object, what: str = "token") -> int:
    """A token as the kernel takes it (__u64), or ValueError saying why not."""
    if not isinstance(token, int) or isinstance(token, bool) or not 0 <= token < 1 << 64:
        raise ValueError(f"{what} must be an integer from 0 to 2**64 - 1: {token!r}")
    return token


def _check_deps(deps: Sequence[int]) -> list[int]:
    if len(deps) > abi.MAX_DEPS:
        raise ValueError(f"at most {abi.MAX_DEPS} dependencies: {len(deps)} given")
    return [_check_token(dep, "a dependency") for dep in deps]


class Session:
    """A session fd: outgoing (created here) or incoming (retrieved)."""

    def __init__(self, fd: int, name: str, incoming: bool) -> None:
        self._fd = fd
        self.name = name
        self.incoming = incoming

    def fileno(self) -> int:
        if self._fd < 0:
            raise ValueError(f"session {self.name!r} is closed")
        return self._fd

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def close(self) -> None:
        """Close the fd: unpreserves an outgoing session, finishes an incoming one."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        kind = "incoming" if self.incoming else "outgoing"
        return f"<Session {self.name!r} {kind} fd={self._fd}>"

    def _call(self, operation: str, what: str, number: int, layout: struct.Struct, *fields: object) -> tuple[Any, ...]:
        try:
            return ioctl_call(self.fileno(), number, layout, *fields)
        except OSError as e:
            raise ioctl_error(e.errno, operation, f"{what} in session {self.name!r}") from None

    def preserve(self, file: FileLike, token: int, deps: Sequence[int] = ()) -> None:
        """Preserve ``file`` under ``token``; the session keeps its own reference.

        ``deps`` are tokens of files in this session that the file needs
        (at most abi.MAX_DEPS): they are serialized before it, and retrieved
        before it in the next kernel.
        """
        _check_token(token)
        deps = _check_deps(deps)
        what = f"token {token}"
        if not deps:
            self._call("preserve", what, abi.SESSION_PRESERVE_FD, abi.PRESERVE_FD, _fileno(file), token)
            return
        tokens = array.array("Q", deps)  # the kernel reads it through its address
        address, count = tokens.buffer_info()
        self._call("preserve", what, abi.SESSION_PRESERVE_FD_DEPS, abi.PRESERVE_FD_DEPS,
                   _fileno(file), token, address, count, 0)

    def retrieve(self, token: int) -> int:
        """Return a new fd (close-on-exec) for the file preserved under ``token``."""
        _check_token(token)
        _, fd, _ = self._call("retrieve", f"token {token}", abi.SESSION_RETRIEVE_FD, abi.RETRIEVE_FD, -1, token)
        return int(fd)

    def finish(self) -> None:
        """End the hand-over: files not retrieved are freed."""
        self._call("finish", "", abi.SESSION_FINISH, abi.FINISH, 0)

    def get_name(self) -> str:
        """Ask the kernel for the session's name."""
        _, _, raw = self._call("get_name", "", abi.SESSION_GET_NAME, abi.GET_NAME, 0, b"")
        return bytes(raw).split(b"\0", 1)[0].decode()


@dataclass(frozen=True)
class DeviceState:
    """What LIVEUPDATE_IOCTL_GET_STATE reports."""

    state: abi.State
    kho_boot: bool
    format_version: int
    sessions: int
    files: int
    incoming_sessions: int
    incoming_files: int
    bytes_serialized: int


@dataclass(frozen=True)
class EventResult:
    """The kernel's reply to an event; FINISH fills in what it released."""

    event: abi.Event
    released_sessions: int
    released_files: int
    released_bytes: int


class Device:
    """An open /dev/liveupdate (one process at a time may hold it)."""

    def __init__(self, path: str = DEVICE_PATH) -> None:
        self.path = path
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as e:
            raise open_error(e.errno, path) from None

    def fileno(self) -> int:
        if self._fd < 0:
            raise ValueError(f"{self.path} is closed")
        return self._fd

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Device:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _session_call(self, operation: str, number: int, name: str) -> int:
        raw = _encode_name(name)
        try:
            _, fd, _ = ioctl_call(self.fileno(), number, abi.CREATE_SESSION, -1, raw)
        except OSError as e:
            raise ioctl_error(e.errno, operation, repr(name)) from None
        return int(fd)

    def create_session(self, name: str) -> Session:
        """Create an outgoing session; hold it until the kexec."""
        return Session(self._session_call("create_session", abi.IOCTL_CREATE_SESSION, name), name, False)

    def retrieve_session(self, name: str) -> Session:
        """Take a session that the previous kernel handed over."""
        return Session(self._session_call("retrieve_session", abi.IOCTL_RETRIEVE_SESSION, name), name, True)

    def get_state(self) -> DeviceState:
        """The state machine's state and the counts of sessions, files and bytes."""
        try:
            _, state, flags, version, sessions, files, in_sessions, in_files, nr_bytes = ioctl_call(
                self.fileno(), abi.IOCTL_GET_STATE, abi.GET_STATE, *([0] * 8)
            )
        except OSError as e:
            raise ioctl_error(e.errno, "get_state", "") from None
        kho_boot = bool(flags & abi.STATE_KHO_BOOT)
        return DeviceState(abi.State(state), kho_boot, version, sessions, files, in_sessions, in_files, nr_bytes)

    def event(self, event: abi.Event) -> EventResult:
        """Send ``event``; on failure the error names the file that failed, if one did."""
        buf = bytearray(abi.SET_EVENT.pack(abi.SET_EVENT.size, int(event), 0, 0, 0, 0, b""))
        try:
            fcntl.ioctl(self.fileno(), abi.IOCTL_SET_EVENT, buf, True)
        except OSError as e:
            # The kernel writes the struct back on failure too.
            *_, token, raw = abi.SET_EVENT.unpack(buf)
            session = raw.split(b"\0", 1)[0].decode(errors="replace")
            what = f"(session {session!r}, token {token})" if session else ""
            raise ioctl_error(e.errno, event.name.lower(), what) from None
        _, _, sessions, files, nr_bytes, _, _ = abi.SET_EVENT.unpack(buf)
        return EventResult(event, sessions, files, nr_bytes)

    def prepare(self) -> EventResult:
        """Serialize every preserved file into KHO (NORMAL to PREPARED)."""
        return self.event(abi.Event.PREPARE)

    def freeze(self) -> EventResult:
        """Record the last changes (PREPARED to FROZEN)."""
        return self.event(abi.Event.FREEZE)

    def cancel(self) -> EventResult:
        """Undo PREPARE and FREEZE (back to NORMAL)."""
        return self.event(abi.Event.CANCEL)

    def finish(self) -> EventResult:
        """Release what the previous kernel handed over and nobody retrieved (UPDATED to NORMAL)."""
        return self.event(abi.Event.FINISH)
