"""liveupdated across a real kexec: clients hand memfds to the agent, the CLI
drives the kexec through the agent, and after it each client gets its memfd
back only if the policy allows.

Kernel 1 starts the agent, preserves memfds as root and as uid 1000, checks
policy denials, limits and a misbehaving client; the plan then runs
``liveupdate kexec``, which talks to the agent (it holds the device).
Kernel 2 starts the agent again; it takes the sessions over, hands them back
(to the CLI, the library, and a child running as uid 1000), refuses uid 2000,
and finishes once everything is claimed; then a client leaves a session that
nobody claims in kernel 3, where the agent finishes at its deadline.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import resource
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import stamps
from conftest import PATIENCE, cli, cli_process

import liveupdate
from liveupdate import LiveUpdateError, protocol

MIB = 1 << 20
SOCKET = protocol.DEFAULT_SOCKET
OUT = Path(os.environ.get("LU_OUT", "/tmp"))
POLICY = """\
sessions:
  - name: "vm-*"
    uid: [0, 1000]
limits:
  sessions: 3
  files: 8
  bytes: 96M
finish_after: {finish_after}
"""


def data(file_id: int, size: int) -> bytes:
    """``size`` bytes of stamped pages: each names its file and index."""
    return stamps.pages(file_id, 0, size // stamps.PAGE, generation=1)


def memfd_with(payload: bytes) -> int:
    fd = os.memfd_create("agent-test")
    os.write(fd, payload)
    return fd


def start_agent(log: str, finish_after: int = 120, *options: str) -> None:
    policy = Path("/tmp/policy.yaml")
    policy.write_text(POLICY.format(finish_after=finish_after))
    with open(OUT / log, "w") as out:
        subprocess.Popen([sys.executable, "-m", "liveupdate", "agent", "--policy", str(policy), "--socket", SOCKET,
                          *options], stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    wait_for_agent(log)


def wait_for_agent(log: str) -> None:
    """Until the agent answers a client (its log is the failure message)."""
    deadline = time.monotonic() + PATIENCE
    while True:
        try:
            liveupdate.connect(SOCKET).close()
            return
        except LiveUpdateError:
            assert time.monotonic() < deadline, (OUT / log).read_text()
            time.sleep(0.2)


def as_user(uid: int, work: Callable[[], None]) -> int:
    """Run ``work`` in a child with ``uid``; returns its exit status (0: no exception)."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setgid(uid)
            os.setuid(uid)
            work()
            os._exit(0)
        except LiveUpdateError as e:
            os._exit(100 + e.errno)
        except BaseException:
            os._exit(99)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


@pytest.mark.stage(1)
def test_kernel1_clients_preserve_through_the_agent() -> None:
    start_agent("agent1.log")
    root_fd = memfd_with(data(1, 16 * MIB))
    with liveupdate.connect(SOCKET) as agent:
        agent.preserve("vm-root", root_fd, token=1)
    os.close(root_fd)

    def user_preserves() -> None:
        with liveupdate.connect(SOCKET) as agent:
            agent.preserve("vm-user", memfd_with(data(2, 8 * MIB)), token=1)

    assert as_user(1000, user_preserves) == 0

    def user_wants(session: str) -> Callable[[], None]:
        return lambda: liveupdate.connect(SOCKET).preserve(session, memfd_with(b"x"), token=5)

    assert as_user(1000, user_wants("other")) == 100 + errno.EPERM  # no rule allows it
    assert as_user(1000, user_wants("vm-root")) == 100 + errno.EPERM  # root's session
    assert as_user(2000, user_wants("vm-2000")) == 100 + errno.EPERM  # uid not in the rule

    with liveupdate.connect(SOCKET) as agent:
        big = memfd_with(data(3, 96 * MIB))
        with pytest.raises(LiveUpdateError) as exc:
            agent.preserve("vm-big", big, token=1)  # 16 MiB held + 96 MiB > 96M
        assert exc.value.errno == errno.EDQUOT and "limit" in str(exc.value)
        os.close(big)
        names = {s["name"]: s for s in agent.sessions()}
        assert names["vm-root"]["tokens"] == [1] and names["vm-user"]["owner"] == 1000
        assert "vm-big" not in names


@pytest.mark.stage(1)
def test_kernel1_agent_survives_bad_clients() -> None:
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    raw.connect(SOCKET)
    for message, err in [(b"{nope", errno.EPROTO), (b"x" * (protocol.MAX_MESSAGE + 1), errno.EMSGSIZE),
                         (b'{"op": "dance"}', errno.EOPNOTSUPP), (b'{"op": "preserve", "session": "vm-root"}',
                                                                 errno.EINVAL)]:
        raw.send(message)
        reply, _ = protocol.receive(raw)
        assert (reply["ok"], reply["errno"]) == (False, err), reply

    # Hostile input, no policy needed: before, each of these ended the agent
    # (RecursionError, ValueError, struct.error, OverflowError).
    for message in (b"[" * 5000, b"1" * 5000):
        raw.send(message)
        reply, _ = protocol.receive(raw)
        assert (reply["ok"], reply["errno"]) == (False, errno.EPROTO), reply
    fd = memfd_with(b"bad fields")
    for fields in ({"token": -1}, {"token": 1 << 64}, {"session": "vm-" + "x" * 70}, {"deps": [-1]},
                   {"deps": [1 << 64]}):
        protocol.send(raw, {"op": "preserve", "session": "vm-root", "token": 9, **fields}, [fd])
        reply, _ = protocol.receive(raw)
        assert (reply["ok"], reply["errno"]) == (False, errno.EINVAL), (fields, reply)
    os.close(fd)
    raw.close()
    with liveupdate.connect(SOCKET) as agent:
        assert "vm-" + "x" * 70 not in {s["name"] for s in agent.sessions()}

    # Out of fds: the agent stops accepting for a moment instead of dying.
    with liveupdate.connect(SOCKET) as agent:
        pid = struct.unpack("3i", agent.sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0]
    limit = resource.prlimit(pid, resource.RLIMIT_NOFILE, (32, 32))
    flood = []
    try:
        for _ in range(64):
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            conn.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                conn.connect(SOCKET)
            flood.append(conn)
        time.sleep(3)
    finally:
        for conn in flood:
            conn.close()
        resource.prlimit(pid, resource.RLIMIT_NOFILE, limit)
    wait_for_agent("agent1.log")
    assert "cannot accept a client" in (OUT / "agent1.log").read_text()

    # A client that asks and leaves before the reply: its fd is preserved all the same.
    fd = memfd_with(b"left early")
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    raw.connect(SOCKET)
    protocol.send(raw, {"op": "preserve", "session": "vm-root", "token": 2}, [fd])
    raw.close()
    os.close(fd)
    deadline = time.monotonic() + PATIENCE
    while True:
        with liveupdate.connect(SOCKET) as agent:
            tokens = {s["name"]: s["tokens"] for s in agent.sessions()}
        if tokens["vm-root"] == [1, 2] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert tokens["vm-root"] == [1, 2]

    # The CLI preserves another process's memfd by its /proc path.
    fd = memfd_with(b"preserved by the CLI")
    done = cli("session", "preserve", "vm-root", "3", f"/proc/{os.getpid()}/fd/{fd}", "--deps", "1", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["token"] == 3
    os.close(fd)
    done = cli("session", "preserve", "vm-root", "3", "/nonexistent")
    assert done.returncode == 1 and "No such file" in done.stderr

    done = cli("session", "list", "--json")
    assert done.returncode == 0
    sessions = {s["name"]: s for s in json.loads(done.stdout)["sessions"]}
    assert set(sessions) == {"vm-root", "vm-user"} and sessions["vm-root"]["tokens"] == [1, 2, 3]
    status = json.loads(cli("status", "--json").stdout)
    assert (status["state"], status["device"]) == ("normal", "busy")


@pytest.mark.stage(2)
def test_kernel2_clients_get_their_files_back() -> None:
    steps = [json.loads(line)["step"] for line in (OUT / "agent_kexec.json").read_text().splitlines()]
    assert steps == ["loaded", "prepared", "frozen", "kexec"]
    start_agent("agent2.log")
    assert "took over 2 sessions" in (OUT / "agent2.log").read_text()

    # Into a process: the command gets the memfd as fd 3.
    done = cli_process("session", "retrieve", "vm-root", "3", "--exec", sys.executable, "-c",
               "import os; print(os.pread(3, 20, 0).decode(), os.environ['LISTEN_FDS'])")
    assert (done.returncode, done.stdout.strip()) == (0, "preserved by the CLI 1"), done.stderr

    out = Path("/tmp/left-early")
    done = cli("session", "retrieve", "vm-root", "2", "--output", str(out), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"session": "vm-root", "token": 2, "output": str(out)}
    assert out.read_bytes() == b"left early"
    done = cli("session", "retrieve", "vm-root", "9", "--output", str(out), "--json")
    assert done.returncode == 1 and json.loads(done.stdout)["errno"] == errno.ENOENT

    with liveupdate.connect(SOCKET) as agent:
        fd = agent.retrieve("vm-root", 1)
        assert os.pread(fd, 16 * MIB, 0) == data(1, 16 * MIB)
        os.close(fd)
        with pytest.raises(LiveUpdateError) as exc:
            agent.retrieve("vm-nothing", 1)
        assert exc.value.errno == errno.ENOENT

    def user_retrieves() -> None:
        with liveupdate.connect(SOCKET) as agent:
            fd = agent.retrieve("vm-user", 1)
            assert os.pread(fd, 8 * MIB, 0) == data(2, 8 * MIB)

    assert as_user(2000, user_retrieves) == 100 + errno.EPERM
    assert as_user(1000, user_retrieves) == 0

    # Everything is claimed: the agent finishes the update by itself.
    deadline = time.monotonic() + PATIENCE
    while Path("/sys/class/misc/liveupdate/state").read_text().strip() != "normal":
        assert time.monotonic() < deadline, (OUT / "agent2.log").read_text()
        time.sleep(0.2)
    assert "finish (all claimed)" in (OUT / "agent2.log").read_text()

    # For kernel 3: a session nobody will claim, carried by a plain kexec.
    with liveupdate.connect(SOCKET) as agent:
        agent.preserve("vm-late", memfd_with(data(4, 4 * MIB)), token=1)


@pytest.mark.stage(3)
def test_kernel3_unclaimed_session_finished_at_the_deadline() -> None:
    start_agent("agent3.log", 3, "--json")
    first = (OUT / "agent3.log").read_text().splitlines()[0]
    assert json.loads(first) == {"socket": SOCKET, "taken_over": 1}
    deadline = time.monotonic() + PATIENCE
    while Path("/sys/class/misc/liveupdate/state").read_text().strip() != "normal":
        assert time.monotonic() < deadline, (OUT / "agent3.log").read_text()
        time.sleep(0.2)
    assert f"finish (deadline): released 1 files, {4 * MIB} bytes" in (OUT / "agent3.log").read_text()
