"""Who is on the other end of the agent's socket.

The kernel vouches for the client's pid, uid and gid as of connect()
(SO_PEERCRED) and, on Linux 6.5 and later, gives a pidfd of that very
process (SO_PEERPIDFD). Its supplementary groups and its systemd unit are
read from /proc, then the pidfd is asked whether the process still lives:
if it does, its pid was not reused in between, so what was read is its
own. Without a pidfd, reading by pid alone is racy; the agent says so in
its log once.

The unit is the *system* unit, as sd_peer_get_unit() reports it: the
first cgroup path component below the slices. A process in a user's
service (``.../user@1000.service/app.slice/qemu@vm-1.service``) belongs to
the system unit ``user@1000.service``, never to ``qemu@vm-1.service``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import struct
from dataclasses import dataclass, field
from pathlib import Path

SO_PEERPIDFD = getattr(socket, "SO_PEERPIDFD", 77)
UNIT_SUFFIXES = (".service", ".scope", ".socket", ".mount", ".swap")


class PeerGone(Exception):
    """The client exited before it could be identified."""


@dataclass(frozen=True)
class Peer:
    """A client: its credentials at connect(), its groups and its system unit."""

    pid: int
    uid: int
    gid: int
    unit: str | None = None
    groups: frozenset[int] = field(default_factory=frozenset)
    pidfd_checked: bool = False

    def describe(self) -> str:
        unit = f" unit {self.unit}" if self.unit else ""
        return f"pid {self.pid} uid {self.uid}{unit}"


def system_unit(cgroup: str) -> str | None:
    """The system unit of a cgroup v2 path, as sd_pid_get_unit() finds it."""
    for part in cgroup.strip("/").split("/"):
        if part.endswith(".slice"):
            continue
        return part if part.endswith(UNIT_SUFFIXES) and len(part) > len(".scope") else None
    return None


def _unified_cgroup(text: str) -> str | None:
    """The cgroup v2 path in /proc/PID/cgroup (the "0::" line), if any."""
    for line in text.splitlines():
        if line.startswith("0::"):
            return line[3:]
    return None


def _groups(status: str) -> frozenset[int]:
    for line in status.splitlines():
        if line.startswith("Groups:"):
            return frozenset(int(g) for g in line.split()[1:])
    return frozenset()


def _pidfd(conn: socket.socket) -> int | None:
    """A pidfd of the peer, None before Linux 6.5; raises PeerGone if it exited."""
    try:
        raw = conn.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD, 4)
    except OSError as e:
        if e.errno == errno.ESRCH:
            raise PeerGone("the client exited") from None
        if e.errno in (errno.ENOPROTOOPT, errno.EINVAL):  # before Linux 6.5
            return None
        raise  # out of fds or memory: the caller decides
    pidfd: int = struct.unpack("i", raw)[0]
    return pidfd


def identify(conn: socket.socket, proc: Path = Path("/proc")) -> Peer:
    """The peer of an accepted AF_UNIX connection.

    Raises PeerGone if it already exited, OSError (EMFILE, ...) if this
    process lacks the resources to tell.
    """
    pid, uid, gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    pidfd = _pidfd(conn)
    try:
        try:
            groups = _groups((proc / str(pid) / "status").read_text())
        except (FileNotFoundError, ProcessLookupError):
            raise PeerGone(f"pid {pid} uid {uid}") from None
        try:
            unit = system_unit(_unified_cgroup((proc / str(pid) / "cgroup").read_text()) or "")
        except FileNotFoundError:  # no cgroups in this kernel, or gone: the pidfd tells
            unit = None
        if pidfd is not None:
            try:
                signal.pidfd_send_signal(pidfd, 0)
            except ProcessLookupError:  # gone: the pid may be another process's now
                raise PeerGone(f"pid {pid} uid {uid}") from None
            except PermissionError:  # alive, and not ours to signal (no CAP_KILL)
                pass
    finally:
        if pidfd is not None:
            with contextlib.suppress(OSError):
                os.close(pidfd)
    return Peer(pid, uid, gid, unit, groups, pidfd is not None)
