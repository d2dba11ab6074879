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
import random
import resource
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import stamps
from conftest import PATIENCE, cli, cli_process, install_next_kernel

import liveupdate
from liveupdate import LiveUpdateError, listing, protocol

MIB = 1 << 20
SOCKET = protocol.DEFAULT_SOCKET
OUT = Path(os.environ.get("LU_OUT", "/tmp"))
CLIENTS = 4242  # the socket's group: only root and its members may connect
POLICY = """\
sessions:
  - name: "vm-*"
    uid: [0, 1000]
  - name: "grp-*"
    gid: 4243
  - name: "unit-%i"
    unit: "qemu@%i.service"
limits:
  sessions: {sessions}
  files: {files}
  bytes: 96M
finish_after: {finish_after}
claim_grace: 5
"""


def data(file_id: int, size: int) -> bytes:
    """``size`` bytes of stamped pages: each names its file and index."""
    return stamps.pages(file_id, 0, size // stamps.PAGE, generation=1)


def memfd_with(payload: bytes) -> int:
    fd = os.memfd_create("agent-test")
    os.write(fd, payload)
    return fd


def write_policy(finish_after: int = 120, sessions: int = 3, files: int = 8) -> Path:
    policy = Path("/tmp/policy.yaml")
    policy.write_text(POLICY.format(finish_after=finish_after, sessions=sessions, files=files))
    return policy


def start_agent(log: str, sessions: int = 3, files: int = 8) -> subprocess.Popen[bytes]:
    """The agent without a service manager: it makes its own socket."""
    policy = write_policy(sessions=sessions, files=files)
    with open(OUT / log, "w") as out:
        agent = subprocess.Popen([sys.executable, "-m", "liveupdate", "agent", "--policy", str(policy), "--socket",
                                  SOCKET, "--socket-group", str(CLIENTS)], stdout=out, stderr=subprocess.STDOUT,
                                 start_new_session=True)
    wait_for_agent(log)
    return agent


def agent_log(log: str) -> str:
    """The agent's log so far. Over the 9p share, a read racing the agent's
    appends once failed with ENODATA (the guest's netfs, not the agent):
    such a read is tried again."""
    for _ in range(20):
        try:
            return (OUT / log).read_text()
        except OSError as e:
            if e.errno != errno.ENODATA:
                raise
            time.sleep(0.1)
    return (OUT / log).read_text()


def wait_for_agent(log: str) -> None:
    """Until the agent answers a client (its log is the failure message)."""
    deadline = time.monotonic() + PATIENCE
    while True:
        try:
            liveupdate.connect(SOCKET).close()
            return
        except LiveUpdateError:
            assert time.monotonic() < deadline, agent_log(log)
            time.sleep(0.2)


def as_user(uid: int, work: Callable[[], None], groups: tuple[int, ...] = (CLIENTS,),
            cgroup: Path | None = None) -> int:
    """Run ``work`` in a child with ``uid`` (gid the same), supplementary ``groups``
    and in ``cgroup``; returns its exit status (0: no exception)."""
    pid = os.fork()
    if pid == 0:
        try:
            if cgroup is not None:
                (cgroup / "cgroup.procs").write_text("0")
            os.setgroups(list(groups))
            os.setgid(uid)
            os.setuid(uid)
            work()
            os._exit(0)
        except LiveUpdateError as e:
            os._exit(100 + e.errno)
        except BaseException:
            os._exit(99)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


class ServiceManager:
    """systemd's side of liveupdated.service, played by the test: the agent's
    listening socket (root:CLIENTS 0660, kept open as a socket unit keeps it),
    a notify socket read by a thread (messages; FDSTORE=1 fds kept by name,
    FDSTOREREMOVE=1), and starts that pass the socket and the stored fds with
    LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES, as after a crash and restart."""

    def __init__(self, notify_path: str, watchdog_usec: int = 0) -> None:
        Path(SOCKET).parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(SOCKET)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.listener.bind(SOCKET)
        os.chmod(SOCKET, 0o660)
        os.chown(SOCKET, -1, CLIENTS)
        self.listener.listen(16)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(notify_path)
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(notify_path)
        self.env = {"NOTIFY_SOCKET": notify_path} | ({"WATCHDOG_USEC": str(watchdog_usec)} if watchdog_usec else {})
        self.messages: list[str] = []
        self.store: dict[str, list[int]] = {}
        self.changed = threading.Condition()
        self.proc: subprocess.Popen[bytes] | None = None
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            data, fds, _, _ = socket.recv_fds(self.notify, 4096, 16)
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            with self.changed:
                if fields.get("FDSTORE") == "1":
                    self.store.setdefault(fields.get("FDNAME", "stored"), []).extend(fds)
                else:
                    for fd in fds:
                        os.close(fd)
                    if fields.get("FDSTOREREMOVE") == "1":
                        for fd in self.store.pop(fields.get("FDNAME", ""), []):
                            os.close(fd)
                self.messages.append(data.decode())
                self.changed.notify_all()

    def wait_for(self, text: str, since: int = 0) -> str:
        """The first message from index ``since`` on that contains ``text``."""
        with self.changed:
            found = self.changed.wait_for(
                lambda: next((m for m in self.messages[since:] if text in m), None), timeout=PATIENCE)
            assert found, self.messages
            return found

    def start(self, log: str, finish_after: int = 120) -> int:
        """Start the agent; returns the index of its first message (for wait_for)."""
        policy = write_policy(finish_after)
        with self.changed:
            since = len(self.messages)
            passed = [("agent.sock", self.listener.fileno())] + [(n, fd) for n, fds in self.store.items() for fd in fds]
        names = ":".join(n for n, _ in passed)
        argv = [sys.executable, "-m", "liveupdate", "agent", "--policy", str(policy), "--json"]
        # Between fork and exec, as systemd: the fds at 3, 4, ... and LISTEN_PID the agent's own.
        wrapper = (f"import fcntl, os, sys; high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 1000) for fd in"
                   f" {[fd for _, fd in passed]!r}]; [os.dup2(fd, 3 + i) for i, fd in enumerate(high)];"
                   f" os.environ |= {{'LISTEN_PID': str(os.getpid()), 'LISTEN_FDS': '{len(passed)}',"
                   f" 'LISTEN_FDNAMES': '{names}'}}; os.execv(sys.executable, {argv!r})")
        with open(OUT / log, "w") as out:
            self.proc = subprocess.Popen([sys.executable, "-c", wrapper], pass_fds=[fd for _, fd in passed],
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                         env=os.environ | self.env)
        return since

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        """As stopping both units: the agent, its socket and its fd store go
        (else a client may still connect to the listener nobody serves)."""
        self.kill()
        self.listener.close()
        os.unlink(SOCKET)
        with self.changed:
            for fd in (fd for fds in self.store.values() for fd in fds):
                os.close(fd)
            self.store.clear()


MANAGER: ServiceManager | None = None


@pytest.mark.stage(1)
def test_kernel1_clients_preserve_through_the_agent() -> None:
    # On its own, the agent makes its socket root:GROUP 0660 (before: 0666).
    plain = start_agent("agent0.log")
    st = os.stat(SOCKET)
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o660, 0, CLIENTS)
    plain.kill()
    plain.wait()

    global MANAGER
    MANAGER = ServiceManager("/tmp/notify.sock")
    MANAGER.wait_for("READY=1", MANAGER.start("agent1.log"))
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
    # Not in the socket's group: no connection at all (before: mode 0666).
    assert as_user(3000, lambda: liveupdate.connect(SOCKET).close(), groups=()) == 100 + errno.EACCES
    # A supplementary group counts (before: only the primary gid).
    assert as_user(3001, user_wants("grp-1"), groups=(CLIENTS, 4243)) == 0
    log = agent_log("agent1.log")
    assert "refused 'preserve' from pid" in log and "uid 2000: policy: uid 2000 may not own" in log, log

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
    # (Not SO_PEERCRED: the socket was made and listened on by the service manager.)
    assert MANAGER is not None and MANAGER.proc is not None
    pid = MANAGER.proc.pid
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
    assert "cannot accept a client" in agent_log("agent1.log")

    # A client that asks and never reads its replies: the others are answered
    # meanwhile, and it is dropped once its oldest reply waited 5 s (before:
    # the agent waited up to 5 s on each reply to it, and every client with it).
    slow = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    slow.connect(SOCKET)
    slow.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        for _ in range(1000):
            slow.send(b'{"op": "status"}')
    with liveupdate.connect(SOCKET) as agent:
        for _ in range(20):
            assert agent.status()["state"] == "normal"
    assert "read no reply" not in agent_log("agent1.log")  # answered before the slow one's drop
    deadline = time.monotonic() + PATIENCE
    while "read no reply for 5 s" not in agent_log("agent1.log"):
        assert time.monotonic() < deadline, agent_log("agent1.log")
        time.sleep(0.2)
    slow.setblocking(True)
    # What was sent before the drop, then the end: EOF, or a reset (the agent
    # closed with requests of this client unread).
    with contextlib.suppress(ConnectionResetError):
        while slow.recv(protocol.MAX_MESSAGE):
            pass
    slow.close()

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
    assert set(sessions) == {"vm-root", "vm-user", "grp-1"} and sessions["vm-root"]["tokens"] == [1, 2, 3]
    status = json.loads(cli("status", "--json").stdout)
    assert (status["state"], status["device"]) == ("normal", "busy")


def random_message(rng: random.Random) -> bytes:
    """Anything a client could send: noise, broken or deep JSON, or a plausible request gone wrong."""
    kind = rng.randrange(6)
    if kind == 0:
        return rng.randbytes(rng.randrange(1, 2048))
    if kind == 1:
        return rng.choice([b"[", b"{", b'{"op":']) * rng.randrange(1, 20000)
    if kind == 2:
        return b'{"op": "' + rng.randbytes(rng.randrange(64)) + b'"}'
    if kind == 3:
        return json.dumps({"op": "status"}).encode()[: rng.randrange(1, 16)]  # cut short
    # No rule allows "fuzz-*": whatever the fuzzer sends, it cannot add a session or a file.
    values: list[Any] = [None, True, -1, 0, 1, 2**64, 1.5, "fuzz-nope", "vm-" + "x" * 80, "", [], [-1], {}, "\udc80"]
    fields = {k: rng.choice(values) for k in rng.sample(["session", "token", "deps", "event", "op"], rng.randrange(5))}
    fields["op"] = rng.choice(["hello", "status", "list", "preserve", "retrieve", "event", "dance", 7, None])
    return json.dumps(fields).encode(errors="surrogatepass")


def random_fds(rng: random.Random) -> list[int]:
    kind = rng.randrange(4)
    if kind == 0:
        return []
    if kind == 1:
        return list(os.pipe())[: rng.randrange(1, 3)]
    if kind == 2:
        return [os.open("/dev/null", os.O_RDONLY)]
    return [memfd_with(b"fuzz")]


@pytest.mark.stage(1)
def test_kernel1_protocol_fuzz() -> None:
    """Random messages, fds and connections for a bounded time (LU_AGENT_FUZZ_SECONDS,
    default 20; seeded, LU_AGENT_FUZZ_SEED replays): then the agent still serves a
    good client and holds exactly the sessions it held before."""
    seed = int(os.environ.get("LU_AGENT_FUZZ_SEED", time.time_ns()))
    rng = random.Random(seed)
    print(f"agent fuzz seed {seed} (replay with LU_AGENT_FUZZ_SEED={seed})")
    with liveupdate.connect(SOCKET) as agent:
        before = agent.sessions()
    conns: list[socket.socket] = []
    sent = opened = 0
    end = time.monotonic() + float(os.environ.get("LU_AGENT_FUZZ_SECONDS", "20"))
    while time.monotonic() < end:
        if not conns or rng.randrange(8) == 0:
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            conn.connect(SOCKET)
            conn.setblocking(False)
            conns.append(conn)
            opened += 1
        conn = rng.choice(conns)
        message, fds = random_message(rng), random_fds(rng)
        try:
            with contextlib.suppress(BlockingIOError):
                if fds:
                    socket.send_fds(conn, [message], fds)
                else:
                    conn.send(message)
                sent += 1
            with contextlib.suppress(BlockingIOError):
                while rng.randrange(2):  # read some replies, leave others
                    socket.recv_fds(conn, protocol.MAX_MESSAGE + 1, 4)
        except OSError:  # dropped as slow, or a message too large: a new client next time
            conns.remove(conn)
            conn.close()
        finally:
            for fd in fds:
                os.close(fd)
        if len(conns) > 32 or rng.randrange(16) == 0:
            conns.pop(rng.randrange(len(conns))).close()
    for conn in conns:
        conn.close()
    print(f"agent fuzz: {sent} messages, {opened} connections")
    with liveupdate.connect(SOCKET) as agent:
        assert agent.status()["state"] == "normal"
        assert agent.sessions() == before


@pytest.mark.stage(1)
def test_kernel1_a_killed_agent_loses_nothing() -> None:
    """SIGKILL: the service manager's fd store kept a duplicate of every session
    fd and the registry, and the restarted agent adopts them (before: every
    session it held was closed, and in NORMAL unpreserved)."""
    assert MANAGER is not None
    with liveupdate.connect(SOCKET) as agent:
        before = agent.sessions()
    stored = {name.rpartition("@")[0] for name in MANAGER.store}  # NAME@BOOT
    assert {"registry", "out-" + b"liveupdated".hex()} <= stored, stored
    assert {"out-" + s["name"].encode().hex() for s in before} <= stored, stored
    MANAGER.kill()
    told = MANAGER.wait_for("READY=1", MANAGER.start("agent1b.log"))
    assert "took over 0 sessions, kept 3" in told, told
    with liveupdate.connect(SOCKET) as agent:
        assert agent.sessions() == before
    # The plan's `liveupdate kexec` drives this agent, into a kernel it checks
    # first, where conftest.NEXT_KERNEL says.
    install_next_kernel()


@pytest.mark.stage(2)
def test_kernel2_clients_get_their_files_back() -> None:
    steps = [json.loads(line)["step"] for line in (OUT / "agent_kexec.json").read_text().splitlines()]
    assert steps == ["checked", "loaded", "prepared", "frozen", "kexec"]
    global MANAGER
    MANAGER = ServiceManager("/tmp/notify.sock")
    MANAGER.wait_for("READY=1", MANAGER.start("agent2.log"))
    assert json.loads(agent_log("agent2.log").splitlines()[0])["taken_over"] == 3
    # Killed right after the take-over: the incoming sessions and their registry
    # were in the fd store (before: closing them finished them, and every file
    # not claimed yet was freed).
    MANAGER.kill()
    told = MANAGER.wait_for("READY=1", MANAGER.start("agent2b.log"))
    assert "took over 3 sessions, kept 0" in told, told

    # A misspelled command: refused before anything is taken (before: the file was
    # handed out, counted as claimed, and lost with the CLI's exit).
    done = cli_process("session", "retrieve", "vm-root", "3", "--exec", "/no/such/qemu")
    assert done.returncode == 127 and "no such command" in done.stderr, done.stderr
    # Into a process: the CLI becomes the command (same pid: LISTEN_PID), which
    # gets the memfd as fd 3; the caller's own LISTEN_* are not passed on.
    done = cli_process("session", "retrieve", "vm-root", "3", "--exec", sys.executable, "-c",
                       "import os; e = os.environ; print(os.pread(3, 20, 0).decode(), e['LISTEN_FDS'],"
                       " e['LISTEN_PID'] == str(os.getpid()), e['LISTEN_FDNAMES'])",
                       env={"LISTEN_FDS": "4", "LISTEN_FDNAMES": "stale", "LISTEN_PID": "1"})
    assert (done.returncode, done.stdout.strip()) == (0, "preserved by the CLI 1 True vm-root-3"), done.stderr

    out = Path("/tmp/left-early")
    done = cli("session", "retrieve", "vm-root", "2", "--output", str(out), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"session": "vm-root", "token": 2, "output": str(out)}
    assert out.read_bytes() == b"left early"
    done = cli("session", "retrieve", "vm-root", "9", "--output", str(out), "--json")
    assert done.returncode == 1 and json.loads(done.stdout)["errno"] == errno.ENOENT

    # The policy lets uid 1000 own vm-* sessions, but vm-root was root's (before: handed out).
    assert as_user(1000, lambda: liveupdate.connect(SOCKET).retrieve("vm-root", 1)) == 100 + errno.EPERM
    assert "belongs to uid 0" in agent_log("agent2b.log")

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
    assert as_user(3001, lambda: liveupdate.connect(SOCKET).retrieve("grp-1", 5), groups=(CLIENTS, 4243)) == 0

    # All claimed, but within claim_grace a claimed file can still be had again
    # (before: FINISH within a second, and a client that failed lost its file).
    assert Path("/sys/class/misc/liveupdate/state").read_text().strip() == "updated"
    with liveupdate.connect(SOCKET) as agent:
        os.close(agent.retrieve("vm-root", 1))

    # Everything is claimed: the agent finishes the update by itself, and says so.
    MANAGER.wait_for("STATUS=finished")
    assert Path("/sys/class/misc/liveupdate/state").read_text().strip() == "normal"
    assert "finish (all claimed)" in agent_log("agent2b.log")

    # For kernel 3: a session nobody will claim, carried by a plain kexec.
    with liveupdate.connect(SOCKET) as agent:
        agent.preserve("vm-late", memfd_with(data(4, 4 * MIB)), token=1)


@pytest.mark.stage(3)
def test_kernel3_unclaimed_session_finished_at_the_deadline() -> None:
    """And the agent under a service manager: socket activation, READY=1 after
    the take-over, STATUS= lines, watchdog pings."""
    global MANAGER
    MANAGER = manager = ServiceManager("/tmp/notify.sock", watchdog_usec=2_000_000)
    since = manager.start("agent3.log", finish_after=3)
    assert manager.wait_for("READY=1", since) == "READY=1\nSTATUS=took over 1 sessions, kept 0; serving clients"
    first = agent_log("agent3.log").splitlines()[0]
    assert json.loads(first) == {"socket": SOCKET, "activated": True, "taken_over": 1, "adopted": 0}
    manager.wait_for("WATCHDOG=1", since)
    assert manager.wait_for("STATUS=finished", since) == "STATUS=finished the update; holding 0 sessions"
    with liveupdate.connect(SOCKET) as agent:  # through the socket it was given
        assert agent.status()["state"] == "normal"
    assert f"finish (deadline): released 1 files, {4 * MIB} bytes" in agent_log("agent3.log")


@pytest.mark.stage(3)
def test_kernel3_list_comes_in_pages() -> None:
    """More sessions, and a session with more tokens, than a page holds: the list
    comes in pages (before: in one reply, and beyond 64 KiB an error instead)."""
    assert MANAGER is not None
    MANAGER.stop()
    many = [(1 << 63) + i for i in range(listing.PAGE_TOKENS + 1)]
    singles = [f"vm-{i:02d}" for i in range(listing.PAGE_SESSIONS)]
    agent_proc = start_agent("agent3b.log", sessions=len(singles) + 1, files=len(many) + len(singles))
    try:
        with liveupdate.connect(SOCKET) as agent:
            for token in many:
                fd = memfd_with(b"m")
                agent.preserve("vm-many", fd, token=token)
                os.close(fd)
            for name in singles:
                fd = memfd_with(name.encode())
                agent.preserve(name, fd, token=7)
                os.close(fd)
            first = agent.call("list")[0]
            assert first["next"] is not None and len(first["sessions"]) <= listing.PAGE_SESSIONS, first
            listed = {s["name"]: s["tokens"] for s in agent.sessions()}
        assert listed == {"vm-many": many} | {name: [7] for name in singles}
    finally:
        agent_proc.kill()
        agent_proc.wait()


def unit_cgroup(path: str) -> Path:
    """A cgroup at ``path`` of the cgroup v2 hierarchy, as systemd lays it out."""
    root = Path("/sys/fs/cgroup")
    if not (root / "cgroup.procs").exists():
        subprocess.run(["mount", "-t", "cgroup2", "cgroup2", str(root)], check=True)
    group = root / path
    group.mkdir(parents=True, exist_ok=True)
    return group


@pytest.mark.stage(3)
def test_kernel3_units_from_real_cgroups() -> None:
    """A rule by systemd unit, on the kernel's cgroups: qemu@7.service may own unit-7
    (the rule's %i), not unit-8; a user's service of that name is not the system unit
    (before: the innermost unit in the cgroup path counted, so it passed)."""
    system = unit_cgroup("system.slice/qemu@7.service")
    user = unit_cgroup("user.slice/user-2001.slice/user@2001.service/app.slice/qemu@7.service")
    agent_proc = start_agent("agent3c.log")

    def preserves(name: str) -> Callable[[], None]:
        return lambda: liveupdate.connect(SOCKET).preserve(name, memfd_with(b"unit"), token=1)

    try:
        assert as_user(2000, preserves("unit-7"), cgroup=system) == 0
        assert as_user(2000, preserves("unit-8"), cgroup=system) == 100 + errno.EPERM
        assert as_user(2001, preserves("unit-7"), cgroup=user) == 100 + errno.EPERM
        with liveupdate.connect(SOCKET) as agent:
            assert {s["name"]: s["owner"] for s in agent.sessions()} == {"unit-7": 2000}
    finally:
        agent_proc.kill()
        agent_proc.wait()
    log = agent_log("agent3c.log")
    assert "uid 2000 unit qemu@7.service: policy: uid 2000 may not own session 'unit-8'" in log, log
    assert "uid 2001 unit user@2001.service: policy" in log, log
