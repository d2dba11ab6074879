"""liveupdated: the agent that holds /dev/liveupdate and sessions for services.

Only one process may hold /dev/liveupdate, and closing a session
unpreserves it, so services hand their fds to this agent (protocol.py)
and get them back after the kexec. The agent keeps a registry of what it
holds (session names, tokens, owners) in a memfd that it preserves in its
own session, REGISTRY_SESSION: after the kexec it reads the registry,
retrieves every session, and hands each fd only to a client that the
policy allows. It sends FINISH when every file was claimed or the
policy's deadline passed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import resource
import selectors
import socket
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import abi, protocol
from .device import Device, Session
from .errors import LiveUpdateError
from .policy import Peer, Policy

REGISTRY_SESSION = "liveupdated"
REGISTRY_TOKEN = 1
REGISTRY_SIZE = 1 << 20


@dataclass
class Held:
    """A session the agent holds for its owner."""

    session: Session
    owner: int
    files: dict[int, int] = field(default_factory=dict)  # token -> bytes
    claimed: set[int] = field(default_factory=set)  # incoming: tokens handed back


def peer_of(conn: socket.socket) -> Peer:
    pid, uid, gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    unit = None
    try:
        for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
            for part in reversed(line.split(":", 2)[-1].split("/")):
                if part.endswith((".service", ".scope")):
                    unit = part
                    break
    except OSError:
        pass
    return Peer(pid, uid, gid, unit)


class Agent:
    def __init__(self, policy: Policy, socket_path: str = protocol.DEFAULT_SOCKET) -> None:
        self.policy = policy
        self.socket_path = socket_path
        self.dev = Device()
        self.outgoing: dict[str, Held] = {}
        self.incoming: dict[str, Held] = {}
        self.registry: int | None = None  # memfd of the outgoing registry
        self.registry_session: Session | None = None
        self.finish_at: float | None = None
        self.sel = selectors.DefaultSelector()
        self.listener = self._listen()
        self.accepting_again: float | None = None  # out of fds: when to try accept() again
        # Every fd the system allows: each client costs one.
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    def _listen(self) -> socket.socket:
        Path(self.socket_path).parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        sock.bind(self.socket_path)
        os.chmod(self.socket_path, 0o666)  # the policy decides, by peer credentials
        sock.listen(16)
        sock.setblocking(False)
        self.sel.register(sock, selectors.EVENT_READ)
        return sock

    # -- the new kernel: take back what the previous agent held ---------------

    def take_over(self) -> int:
        """Retrieve the sessions the previous kernel's agent registered; returns how many."""
        if self.dev.get_state().state != abi.State.UPDATED:
            return 0
        try:
            registry = self.dev.retrieve_session(REGISTRY_SESSION)
        except LiveUpdateError as e:
            if e.errno == errno.ENOENT:
                return 0
            raise
        fd = registry.retrieve(REGISTRY_TOKEN)
        raw = os.pread(fd, REGISTRY_SIZE, 0).split(b"\0", 1)[0]
        os.close(fd)
        for name, entry in json.loads(raw or b"{}").items():
            try:
                session = self.dev.retrieve_session(name)
            except LiveUpdateError as e:
                print(f"liveupdated: session {name!r} of the registry: {e}", flush=True)
                continue
            self.incoming[name] = Held(session, entry["owner"], {int(t): n for t, n in entry["files"].items()})
        registry.close()
        self.finish_at = time.monotonic() + self.policy.finish_after
        return len(self.incoming)

    def _maybe_finish(self) -> None:
        if self.finish_at is None:
            return
        everything = all(h.claimed >= set(h.files) for h in self.incoming.values())
        if everything or time.monotonic() >= self.finish_at:
            result = self.dev.finish()
            print(f"liveupdated: finish ({'all claimed' if everything else 'deadline'}): released "
                  f"{result.released_files} files, {result.released_bytes} bytes", flush=True)
            self._forget_incoming()

    def _forget_incoming(self) -> None:
        """After FINISH: the incoming sessions are empty; close them."""
        for held in self.incoming.values():
            held.session.close()
        self.incoming.clear()
        self.finish_at = None

    # -- the old kernel: hold sessions for clients ------------------------------

    def _write_registry(self) -> None:
        data = {name: {"owner": h.owner, "files": h.files} for name, h in self.outgoing.items()}
        raw = json.dumps(data).encode() + b"\0"
        if len(raw) > REGISTRY_SIZE:
            raise LiveUpdateError(errno.ENOSPC, "registry", "too many sessions for the agent's registry")
        if self.registry is None:
            fd = os.memfd_create("liveupdated-registry", os.MFD_CLOEXEC)
            os.ftruncate(fd, REGISTRY_SIZE)
            os.pwrite(fd, raw, 0)
            session = self.dev.create_session(REGISTRY_SESSION)
            session.preserve(fd, REGISTRY_TOKEN)
            self.registry = fd
            self.registry_session = session
        else:
            os.pwrite(self.registry, raw, 0)

    def _preserve(self, peer: Peer, msg: dict[str, Any], fds: list[int]) -> dict[str, Any]:
        name, token, deps = msg.get("session"), msg.get("token"), msg.get("deps", [])
        if not isinstance(name, str) or not isinstance(token, int) or not isinstance(deps, list) or len(fds) != 1:
            return protocol.error_reply("preserve needs session (string), token (integer) and one fd", errno.EINVAL)
        if name == REGISTRY_SESSION or not self.policy.may_own(peer, name):
            return protocol.error_reply(f"policy: uid {peer.uid} may not own session {name!r}", errno.EPERM)
        held = self.outgoing.get(name)
        if held is not None and held.owner != peer.uid:
            return protocol.error_reply(f"session {name!r} belongs to uid {held.owner}", errno.EPERM)
        mine = [h for h in self.outgoing.values() if h.owner == peer.uid]
        size = os.fstat(fds[0]).st_size
        limits = self.policy.limits
        if held is None and len(mine) >= limits.sessions:
            return protocol.error_reply(f"limit: uid {peer.uid} holds {limits.sessions} sessions", errno.EDQUOT)
        if sum(len(h.files) for h in mine) >= limits.files:
            return protocol.error_reply(f"limit: uid {peer.uid} holds {limits.files} files", errno.EDQUOT)
        if sum(sum(h.files.values()) for h in mine) + size > limits.bytes:
            return protocol.error_reply(f"limit: uid {peer.uid} may hold {limits.bytes} bytes", errno.EDQUOT)
        created = held is None
        if held is None:
            held = Held(self.dev.create_session(name), peer.uid)
        try:
            held.session.preserve(fds[0], token, deps)
        except (LiveUpdateError, ValueError):
            if created:  # a new session that got nothing: drop it
                held.session.close()
            raise
        self.outgoing[name] = held
        held.files[token] = size
        self._write_registry()
        return {"ok": True}

    def _retrieve(self, peer: Peer, msg: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
        name, token = msg.get("session"), msg.get("token")
        if not isinstance(name, str) or not isinstance(token, int):
            return protocol.error_reply("retrieve needs session (string) and token (integer)", errno.EINVAL), []
        held = self.incoming.get(name)
        if held is None or token not in held.files:
            return protocol.error_reply(f"no file {token} in a session {name!r} from the previous kernel",
                                        errno.ENOENT), []
        if not self.policy.may_own(peer, name):
            return protocol.error_reply(f"policy: uid {peer.uid} may not take session {name!r}", errno.EPERM), []
        fd = held.session.retrieve(token)
        held.claimed.add(token)
        return {"ok": True, "bytes": held.files[token]}, [fd]

    def _status(self) -> dict[str, Any]:
        state = self.dev.get_state()
        return {"ok": True, "state": state.state.name.lower(), "sessions": state.sessions, "files": state.files,
                "bytes_serialized": state.bytes_serialized, "incoming_sessions": state.incoming_sessions,
                "kho_boot": state.kho_boot, "format_version": state.format_version}

    def _list(self, peer: Peer) -> dict[str, Any]:
        def visible(held: dict[str, Held], incoming: bool) -> list[dict[str, Any]]:
            return [{"name": n, "owner": h.owner, "incoming": incoming, "tokens": sorted(h.files)}
                    for n, h in held.items() if peer.uid in (0, h.owner) or self.policy.may_own(peer, n)]

        return {"ok": True, "sessions": visible(self.outgoing, False) + visible(self.incoming, True)}

    def _event(self, peer: Peer, msg: dict[str, Any]) -> dict[str, Any]:
        if peer.uid != 0:
            return protocol.error_reply("events are for root", errno.EPERM)
        try:
            event = abi.Event[str(msg.get("event", "")).upper()]
        except KeyError:
            return protocol.error_reply(f"unknown event {msg.get('event')!r}", errno.EOPNOTSUPP)
        result = self.dev.event(event)
        if event == abi.Event.FINISH:
            self._forget_incoming()
        return {"ok": True, "state": self.dev.get_state().state.name.lower(),
                "released_sessions": result.released_sessions, "released_files": result.released_files,
                "released_bytes": result.released_bytes}

    def handle(self, peer: Peer, msg: dict[str, Any], fds: list[int]) -> tuple[dict[str, Any], list[int]]:
        """Answer one request. Received fds are closed here whatever happens."""
        op = msg.get("op")
        try:
            if op == "preserve":
                return self._preserve(peer, msg, fds), []
            if fds:
                return protocol.error_reply(f"{op!r} takes no fd", errno.EINVAL), []
            if op == "retrieve":
                return self._retrieve(peer, msg)
            if op == "hello":
                return {"ok": True, "version": protocol.VERSION}, []
            if op == "status":
                return self._status(), []
            if op == "list":
                return self._list(peer), []
            if op == "event":
                return self._event(peer, msg), []
            return protocol.error_reply(f"unknown op {op!r}", errno.EOPNOTSUPP), []
        except LiveUpdateError as e:
            return protocol.error_reply(str(e), e.errno), []
        except ValueError as e:  # a field the device API refuses: a name, token or dependency
            return protocol.error_reply(str(e), errno.EINVAL), []
        finally:
            for fd in fds:
                os.close(fd)

    # -- the loop ----------------------------------------------------------------

    def _serve_one(self, conn: socket.socket) -> None:
        try:
            received = protocol.receive(conn)
        except protocol.ProtocolError as e:
            for fd in e.fds:
                os.close(fd)
            self._reply(conn, protocol.error_reply(str(e), e.errno), [])
            return
        except OSError:
            received = None
        if received is None:
            self.sel.unregister(conn)
            conn.close()
            return
        msg, fds = received
        reply, out_fds = self.handle(peer_of(conn), msg, fds)
        self._reply(conn, reply, out_fds)

    def _reply(self, conn: socket.socket, reply: dict[str, Any], fds: list[int]) -> None:
        try:
            protocol.send(conn, reply, fds)
        except OSError:
            pass  # the client left; what it asked for stays held (or claimed)
        finally:
            for fd in fds:
                os.close(fd)

    def _accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except BlockingIOError:
            return
        except OSError as e:
            if e.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                raise
            # Out of fds: stop accepting for a second rather than spin or die;
            # waiting clients stay queued in the backlog.
            print(f"liveupdated: cannot accept a client: {e.strerror}; pausing", flush=True)
            self.sel.unregister(self.listener)
            self.accepting_again = time.monotonic() + 1.0
            return
        conn.settimeout(5.0)  # a client that does not read its replies cannot stall the agent
        self.sel.register(conn, selectors.EVENT_READ)

    def serve(self, until: float | None = None) -> None:
        """Answer clients until ``until`` (time.monotonic()) or forever."""
        while until is None or time.monotonic() < until:
            self._maybe_finish()
            if self.accepting_again is not None and time.monotonic() >= self.accepting_again:
                self.sel.register(self.listener, selectors.EVENT_READ)
                self.accepting_again = None
            for key, _ in self.sel.select(timeout=1.0):
                if key.fileobj is self.listener:
                    self._accept()
                else:
                    self._serve_one(key.fileobj)  # type: ignore[arg-type]
