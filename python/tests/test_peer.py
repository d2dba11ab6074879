"""Peers of the agent's socket: credentials, groups, and the system unit."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from liveupdate.peer import PeerGone, identify, system_unit


@pytest.mark.parametrize(
    ("cgroup", "unit"),
    [
        ("/system.slice/qemu@vm-1.service", "qemu@vm-1.service"),
        # A user's service belongs to the system unit user@UID.service (sd_peer_get_unit).
        ("/user.slice/user-1000.slice/user@1000.service/app.slice/qemu@vm-1.service", "user@1000.service"),
        ("/user.slice/user-1000.slice/session-3.scope", "session-3.scope"),
        ("/system.slice/qemu@vm-1.service/payload/sub", "qemu@vm-1.service"),
        ("/machine.slice/machine-qemu\\x2d1.scope", "machine-qemu\\x2d1.scope"),
        ("/init.scope", "init.scope"),
        ("/", None),
        ("", None),
        ("/system.slice", None),
        ("/system.slice/not-a-unit", None),
    ],
)
def test_system_unit(cgroup: str, unit: str | None) -> None:
    assert system_unit(cgroup) == unit


def fake_proc(tmp_path: Path, pid: int, cgroup: str, groups: str) -> Path:
    (tmp_path / str(pid)).mkdir(parents=True)
    (tmp_path / str(pid) / "cgroup").write_text(f"0::{cgroup}\n")
    (tmp_path / str(pid) / "status").write_text(f"Name:\tx\nGroups:\t{groups}\nNSpid:\t{pid}\n")
    return tmp_path


def test_identify_a_live_peer(tmp_path: Path) -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with a, b:
        proc = fake_proc(tmp_path, os.getpid(), "/system.slice/qemu@7.service", "10 20 ")
        peer = identify(a, proc)
    assert (peer.pid, peer.uid, peer.gid) == (os.getpid(), os.getuid(), os.getgid())
    assert peer.unit == "qemu@7.service" and peer.groups == frozenset({10, 20})
    assert "unit qemu@7.service" in peer.describe()


def test_identify_without_cgroups(tmp_path: Path) -> None:
    """A kernel without CONFIG_CGROUPS has no /proc/PID/cgroup: no unit, still a peer."""
    proc = fake_proc(tmp_path, os.getpid(), "/", "7")
    (proc / str(os.getpid()) / "cgroup").unlink()
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with a, b:
        peer = identify(a, proc)
    assert peer.unit is None and peer.groups == frozenset({7})


def test_a_users_unit_is_not_a_system_unit(tmp_path: Path) -> None:
    """The policy sees the system unit: a user's qemu@7.service is user@1000.service."""
    from liveupdate.policy import parse_policy

    policy = parse_policy('sessions:\n  - name: "svc-%i"\n    unit: "qemu@%i.service"\n')
    for cgroup, allowed in [("/system.slice/qemu@7.service", True),
                            ("/user.slice/user-1000.slice/user@1000.service/app.slice/qemu@7.service", False)]:
        proc = fake_proc(tmp_path / str(allowed), os.getpid(), cgroup, "")
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with a, b:
            peer = identify(a, proc)
        assert policy.may_own(peer, "svc-7") is allowed, cgroup
        assert not policy.may_own(peer, "svc-8")


def test_identify_from_the_real_proc() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with a, b:
        peer = identify(a)
    assert peer.groups == frozenset(os.getgroups())


def test_a_peer_whose_pid_was_reused_is_not_identified(tmp_path: Path) -> None:
    """The client exited and its pid went to another process: what /proc says
    under that pid is not the client's, and the pidfd tells."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(str(tmp_path / "sock"))
    listener.listen(1)
    pid = os.fork()
    if pid == 0:
        socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET).connect(str(tmp_path / "sock"))
        os._exit(0)
    conn, _ = listener.accept()
    os.waitpid(pid, 0)
    proc = fake_proc(tmp_path, pid, "/system.slice/someone-else.service", "0")
    with conn, listener, pytest.raises(PeerGone):
        identify(conn, proc)
