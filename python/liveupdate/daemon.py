"""The service manager's side of the agent: socket activation, sd_notify and
the fd store.

All are systemd's documented protocols (sd_listen_fds(3), sd_notify(3)),
spoken directly: fds passed from 3 on with LISTEN_PID, LISTEN_FDS and
LISTEN_FDNAMES, and datagrams to NOTIFY_SOCKET, some carrying fds for the
store (FDSTORE=1), which the manager passes back, named, at the next start.
Without systemd every function here does nothing and says so by its
return value.
"""

from __future__ import annotations

import contextlib
import os
import socket

SD_LISTEN_FDS_START = 3


def listen_fds() -> dict[str, list[int]]:
    """The fds passed to this process, by name (LISTEN_FDNAMES, else "unknown").

    Reads and unsets LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES, so that
    children do not take them for theirs; the fds are made close-on-exec.
    """
    pid, count, names = (os.environ.pop(k, "") for k in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"))
    if not pid.isdigit() or int(pid) != os.getpid() or not count.isdigit():
        return {}
    fds: dict[str, list[int]] = {}
    labels = names.split(":") if names else []
    for i in range(int(count)):
        fd = SD_LISTEN_FDS_START + i
        os.set_inheritable(fd, False)
        fds.setdefault(labels[i] if i < len(labels) else "unknown", []).append(fd)
    return fds


def notify(state: str, fds: list[int] | None = None) -> bool:
    """Send ``state`` ("READY=1", "STATUS=...", ...) to the service manager; False without one."""
    path = os.environ.get("NOTIFY_SOCKET", "")
    if not path:
        return False
    address = "\0" + path[1:] if path.startswith("@") else path
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock, \
            contextlib.suppress(OSError):
        sock.connect(address)
        if fds:
            socket.send_fds(sock, [state.encode()], fds)
        else:
            sock.send(state.encode())
        return True
    return False


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None if none are expected."""
    usec, pid = os.environ.get("WATCHDOG_USEC", ""), os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6


def store_fd(name: str, fd: int) -> bool:
    """Keep a duplicate of ``fd`` in the manager's fd store under ``name`` (FDSTORE=1)."""
    return notify(f"FDSTORE=1\nFDNAME={name}", [fd])


def unstore_fd(name: str) -> bool:
    """Drop what the fd store keeps under ``name``."""
    return notify(f"FDSTOREREMOVE=1\nFDNAME={name}")
