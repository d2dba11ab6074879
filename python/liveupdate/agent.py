"""liveupdated: the agent that holds /dev/liveupdate and sessions for services.

Only one process may hold /dev/liveupdate, and closing a session
unpreserves it, so services hand their fds to this agent (protocol.py)
and get them back after the kexec. The agent keeps a registry of what it
holds (session names, tokens, owners) in a memfd that it preserves in its
own session, REGISTRY_SESSION: after the kexec it reads the registry,
retrieves every session, and hands each fd only to a client that the
policy allows, and only to the uid that preserved it. It sends FINISH
when every file was claimed and the policy's claim_grace passed since the
last claim (until then a claimed file can be retrieved again: a client
that failed with it loses nothing), or at the policy's deadline.

Under systemd, the agent keeps duplicates of what it holds in the
service's fd store (daemon.py): every session fd, and its registries as
memfds. If it crashes or is killed, systemd passes them back at the
restart and adopt() takes them, so nothing is lost; without systemd, a
restart loses what the agent held.

Clients are identified once, when they connect (peer.py): credentials,
supplementary groups and systemd system unit. Every refusal is logged.
The socket is mode 0660, owned by root and by the group given with
``--socket-group``: only root and that group may even connect.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import resource
import selectors
import socket
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import abi, daemon, listing, protocol
from .device import Device, Session
from .errors import LiveUpdateError
from .peer import Peer, PeerGone, identify
from .policy import Policy

log = logging.getLogger("liveupdated")

REGISTRY_SESSION = "liveupdated"
REGISTRY_TOKEN = 1
REGISTRY_SIZE = 1 << 20
# Names in the fd store: the registries, and sessions by direction and name
# (hex: FDNAME allows no ":" and no control characters).
STORED_REGISTRY = "registry"
STORED_INCOMING = "registry-in"


def stored_name(session: Session) -> str:
    return f"{'in' if session.incoming else 'out'}-{session.name.encode().hex()}"


def boot_tag() -> str:
    """This boot's tag, which every name the agent gives the fd store carries
    ("NAME@TAG"): what systemd carried across a kexec has another one."""
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip().replace("-", "")[:8]


def session_name(hexname: str) -> str | None:
    try:
        return bytes.fromhex(hexname).decode()
    except ValueError:
        return None


def _read_registry(fd: int) -> dict[str, Any]:
    raw = os.pread(fd, REGISTRY_SIZE, 0).split(b"\0", 1)[0]
    entries: dict[str, Any] = json.loads(raw or b"{}")
    return entries


# A client may have this many replies waiting before the agent stops reading
# its requests, and is dropped if it reads none of them for SLOW_CLIENT seconds.
MAX_QUEUED = 16
SLOW_CLIENT = 5.0
LONG_WATCHDOG_USEC = 3600 * 10**6  # while an event runs


@dataclass
class Client:
    """A connection, its peer (identified at accept()) and its replies not yet sent."""

    sock: socket.socket
    peer: Peer
    outbox: deque[tuple[bytes, list[int]]] = field(default_factory=deque)
    waiting_since: float | None = None  # time.monotonic() since the oldest reply waits


@dataclass
class Held:
    """A session the agent holds for its owner."""

    session: Session
    owner: int
    files: dict[int, int] = field(default_factory=dict)  # token -> bytes
    claimed: set[int] = field(default_factory=set)  # incoming: tokens handed back

    @classmethod
    def from_entry(cls, session: Session, entry: dict[str, Any]) -> Held:
        """The session's holding as a registry entry (entry()) records it."""
        return cls(session, entry["owner"], {int(t): n for t, n in entry["files"].items()})

    def entry(self) -> dict[str, Any]:
        return {"owner": self.owner, "files": self.files}


class Agent:
    def __init__(self, policy: Policy, socket_path: str = protocol.DEFAULT_SOCKET,
                 socket_group: int | None = None, listener: socket.socket | None = None) -> None:
        self.policy = policy
        self.socket_path = socket_path
        self.socket_group = socket_group
        self.clients: dict[socket.socket, Client] = {}
        self.warned_racy = False
        self.dev = Device()
        self.boot = boot_tag()
        self.outgoing: dict[str, Held] = {}
        self.incoming: dict[str, Held] = {}
        self.registry: int | None = None  # memfd of the outgoing registry
        self.registry_session: Session | None = None
        self.incoming_registry: int | None = None  # memfd: the incoming sessions' registry
        self.finish_at: float | None = None
        self.last_claim = 0.0  # time.monotonic() of the last file handed back
        self.sel = selectors.DefaultSelector()
        self.listener = listener if listener is not None else self._listen()
        self.listener.setblocking(False)
        self.sel.register(self.listener, selectors.EVENT_READ)
        self.watchdog = daemon.watchdog_interval()
        self.next_ping = 0.0
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
        # Who may connect at all; the policy then decides what each may do.
        os.chmod(self.socket_path, 0o660)
        if self.socket_group is not None:
            os.chown(self.socket_path, -1, self.socket_group)
        sock.listen(16)
        return sock

    # -- the new kernel: take back what the previous agent held ---------------

    def take_over(self) -> int:
        """Retrieve the sessions the previous kernel's agent registered; returns how many."""
        if self.incoming_registry is not None:  # adopt() took them from the fd store
            return len(self.incoming)
        if self.dev.get_state().state != abi.State.UPDATED:
            return 0
        try:
            registry = self.dev.retrieve_session(REGISTRY_SESSION)
        except LiveUpdateError as e:
            if e.errno == errno.ENOENT:
                return 0
            if e.errno == errno.EINVAL:  # retrieved by an agent before this one, with no fd store
                log.error("the previous kernel's sessions were taken by an earlier agent, and lost with it")
                return 0
            raise
        self._take_incoming(registry, self.dev.retrieve_session)
        return len(self.incoming)

    def _take_incoming(self, registry: Session, find: Callable[[str], Session]) -> None:
        """Read the previous agent's registry from its session, and hold every session
        it names (``find`` gives each by name) for its owner."""
        fd = registry.retrieve(REGISTRY_TOKEN)
        entries = _read_registry(fd)
        for name, entry in entries.items():
            try:
                session = find(name)
            except LiveUpdateError as e:
                log.error("session %r of the registry: %s", name, e)
                continue
            self.incoming[name] = Held.from_entry(session, entry)
            self._store(stored_name(session), session.fileno())
        # The registry itself, for a restart before FINISH (adopt()).
        self._store(STORED_INCOMING, fd)
        self.incoming_registry = fd
        registry.close()
        self.finish_at = time.monotonic() + self.policy.finish_after

    def _store(self, name: str, fd: int) -> None:
        daemon.store_fd(f"{name}@{self.boot}", fd)

    def _unstore(self, name: str) -> None:
        daemon.unstore_fd(f"{name}@{self.boot}")

    # -- a restart: take back what the service manager kept --------------------

    def adopt(self, stored: dict[str, list[int]]) -> tuple[int, int]:
        """Take the sessions and registries passed back from the fd store (LISTEN_FDNAMES);
        returns how many outgoing and incoming sessions were adopted."""
        # One fd per name: a name stored twice is the same file twice. What
        # another boot stored came across the kexec with systemd.
        firsts: dict[str, int] = {}
        carried: dict[str, int] = {}
        for fdname, fds in stored.items():
            name, at, boot = fdname.rpartition("@")
            if not at:  # stored by an agent that did not tag names (0.4.0 before this boot)
                name, boot = fdname, self.boot
            if boot == self.boot:
                firsts[name] = fds[0]
            else:
                carried[name] = fds[0]
                daemon.unstore_fd(fdname)  # kept again under this boot's names, or dropped
            for extra in fds[1:]:
                os.close(extra)

        def registry(name: str) -> tuple[int | None, dict[str, Any]]:
            fd = firsts.pop(name, None)
            return (fd, _read_registry(fd)) if fd is not None else (None, {})

        self.registry, outgoing = registry(STORED_REGISTRY)
        self.incoming_registry, incoming = registry(STORED_INCOMING)
        for fdname, fd in firsts.items():
            kind, _, hexname = fdname.partition("-")
            name = session_name(hexname) or ""
            entries = outgoing if kind == "out" else incoming if kind == "in" else {}
            session = Session(fd, name, kind == "in")
            if kind == "out" and name == REGISTRY_SESSION and self.registry is not None:
                self.registry_session = session
            elif name in entries:
                held = Held.from_entry(session, entries[name])
                (self.incoming if session.incoming else self.outgoing)[name] = held
            else:  # not in its registry: nobody to hand it to
                log.error("fd store: %r is in no registry; dropped", fdname)
                self._unstore(fdname)
                session.close()
        if self.incoming:
            self.finish_at = time.monotonic() + self.policy.finish_after
        self._take_carried(carried)
        log.info("adopted %d outgoing and %d incoming sessions from the fd store",
                 len(self.outgoing), len(self.incoming))
        return len(self.outgoing), len(self.incoming)

    def _take_carried(self, carried: dict[str, int]) -> None:
        """What systemd carried across the kexec in the fd store: PID 1 retrieved the
        previous agent's sessions at boot, so they come as incoming sessions, the
        registry's own among them (not the registries' memfds: a file preserved in
        the registry's session cannot be preserved again in systemd's)."""
        sessions = {}
        for fdname, fd in carried.items():
            kind, _, hexname = fdname.partition("-")
            name = session_name(hexname)
            if kind == "out" and name:
                sessions[name] = Session(fd, name, incoming=True)
            else:  # the registries' memfds, sessions of the kernel before the previous: stale
                os.close(fd)
        registry = sessions.pop(REGISTRY_SESSION, None)
        if registry is not None:
            self._take_incoming(registry, lambda name: sessions.pop(name, None) or self.dev.retrieve_session(name))
        for name, session in sessions.items():  # nobody to hand them to
            log.error("fd store: session %r from the previous kernel is in no registry; dropped", name)
            session.close()

    def _maybe_finish(self) -> None:
        if self.finish_at is None:
            return
        now = time.monotonic()
        everything = all(h.claimed >= set(h.files) for h in self.incoming.values())
        if (everything and now >= self.last_claim + self.policy.claim_grace) or now >= self.finish_at:
            result = self.dev.finish()
            log.info("finish (%s): released %d files, %d bytes", "all claimed" if everything else "deadline",
                     result.released_files, result.released_bytes)
            daemon.notify(f"STATUS=finished the update; holding {len(self.outgoing)} sessions")
            self._forget_incoming()

    def _forget_incoming(self) -> None:
        """After FINISH: the incoming sessions are empty; close them."""
        for held in self.incoming.values():
            self._unstore(stored_name(held.session))
            held.session.close()
        self.incoming.clear()
        if self.incoming_registry is not None:
            self._unstore(STORED_INCOMING)
            os.close(self.incoming_registry)
            self.incoming_registry = None
        self.finish_at = None

    # -- the old kernel: hold sessions for clients ------------------------------

    def _write_registry(self) -> None:
        data = {name: held.entry() for name, held in self.outgoing.items()}
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
            self._store(stored_name(session), session.fileno())
            self._store(STORED_REGISTRY, fd)
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
        if created:  # the registry names it first: adopt() takes only what it names
            self._store(stored_name(held.session), held.session.fileno())
        return {"ok": True}

    def _retrieve(self, peer: Peer, msg: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
        name, token = msg.get("session"), msg.get("token")
        if not isinstance(name, str) or not isinstance(token, int):
            return protocol.error_reply("retrieve needs session (string) and token (integer)", errno.EINVAL), []
        held = self.incoming.get(name)
        if held is None or token not in held.files:
            return protocol.error_reply(f"no file {token} in a session {name!r} from the previous kernel",
                                        errno.ENOENT), []
        if held.owner != peer.uid:
            return protocol.error_reply(f"session {name!r} belongs to uid {held.owner}", errno.EPERM), []
        if not self.policy.may_own(peer, name):
            return protocol.error_reply(f"policy: uid {peer.uid} may not take session {name!r}", errno.EPERM), []
        fd = held.session.retrieve(token)
        held.claimed.add(token)
        self.last_claim = time.monotonic()
        return {"ok": True, "bytes": held.files[token]}, [fd]

    def _status(self) -> dict[str, Any]:
        state = self.dev.get_state()
        return {"ok": True, "state": state.state.name.lower(), "sessions": state.sessions, "files": state.files,
                "bytes_serialized": state.bytes_serialized, "incoming_sessions": state.incoming_sessions,
                "kho_boot": state.kho_boot, "format_version": state.format_version}

    def _list(self, peer: Peer, msg: dict[str, Any]) -> dict[str, Any]:
        after = listing.parse_cursor(msg.get("after"))
        visible = [(incoming, name, h.owner, list(h.files))
                   for incoming, held in ((False, self.outgoing), (True, self.incoming))
                   for name, h in held.items() if peer.uid in (0, h.owner) or self.policy.may_own(peer, name)]
        sessions, cursor = listing.page(visible, after)
        return {"ok": True, "sessions": sessions, "next": cursor}

    def _event(self, peer: Peer, msg: dict[str, Any]) -> dict[str, Any]:
        if peer.uid != 0:
            return protocol.error_reply("events are for root", errno.EPERM)
        try:
            event = abi.Event[str(msg.get("event", "")).upper()]
        except KeyError:
            return protocol.error_reply(f"unknown event {msg.get('event')!r}", errno.EOPNOTSUPP)
        # A PREPARE of many GiB may outlast the watchdog: the agent is busy, not hung.
        with self._watchdog_relaxed():
            result = self.dev.event(event)
        if event == abi.Event.FINISH:
            self._forget_incoming()
        return {"ok": True, "state": self.dev.get_state().state.name.lower(),
                "released_sessions": result.released_sessions, "released_files": result.released_files,
                "released_bytes": result.released_bytes}

    @contextlib.contextmanager
    def _watchdog_relaxed(self) -> Iterator[None]:
        if self.watchdog is None:
            yield
            return
        daemon.notify(f"WATCHDOG=1\nWATCHDOG_USEC={LONG_WATCHDOG_USEC}")
        try:
            yield
        finally:
            daemon.notify(f"WATCHDOG=1\nWATCHDOG_USEC={int(self.watchdog * 2e6)}")

    def handle(self, peer: Peer, msg: dict[str, Any], fds: list[int]) -> tuple[dict[str, Any], list[int]]:
        """Answer one request; a refusal is logged. Received fds are closed here whatever happens."""
        reply, out_fds = self._answer(peer, msg, fds)
        if not reply.get("ok"):
            log.warning("refused %r from %s: %s", msg.get("op"), peer.describe(), reply.get("error"))
        return reply, out_fds

    def _answer(self, peer: Peer, msg: dict[str, Any], fds: list[int]) -> tuple[dict[str, Any], list[int]]:
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
                return self._list(peer, msg), []
            if op == "event":
                return self._event(peer, msg), []
            return protocol.error_reply(f"unknown op {op!r}", errno.EOPNOTSUPP), []
        except LiveUpdateError as e:
            return protocol.error_reply(str(e), e.errno or errno.EIO), []
        except ValueError as e:  # a field the device API refuses: a name, token or dependency
            return protocol.error_reply(str(e), errno.EINVAL), []
        except Exception as e:  # a defect of ours: this request fails, the agent and what it holds stay
            log.exception("internal error answering %r from %s", op, peer.describe())
            return protocol.error_reply(f"internal error: {type(e).__name__}", errno.EIO), []
        finally:
            for fd in fds:
                os.close(fd)

    # -- the loop ----------------------------------------------------------------

    def _serve_one(self, client: Client) -> None:
        try:
            received = protocol.receive(client.sock)
        except protocol.ProtocolError as e:
            for fd in e.fds:
                os.close(fd)
            log.warning("refused a message from %s: %s", client.peer.describe(), e)
            self._queue(client, protocol.error_reply(str(e), e.errno), [])
            return
        except BlockingIOError:
            return
        except OSError:
            received = None
        if received is None:
            self._drop(client)
            return
        msg, fds = received
        reply, out_fds = self.handle(client.peer, msg, fds)
        self._queue(client, reply, out_fds)

    def _queue(self, client: Client, reply: dict[str, Any], fds: list[int]) -> None:
        """Send ``reply`` when the client reads; the agent never waits for one client."""
        try:
            data = protocol.encode(reply)
        except protocol.ProtocolError as e:  # a reply larger than a message: say so instead
            log.error("reply to %s too large: %s", client.peer.describe(), e)
            for fd in fds:
                os.close(fd)
            data, fds = protocol.encode(protocol.error_reply(f"reply too large: {e}", e.errno)), []
        client.outbox.append((data, fds))
        if client.waiting_since is None:
            client.waiting_since = time.monotonic()
        self._flush(client)

    def _flush(self, client: Client) -> None:
        while client.outbox:
            data, fds = client.outbox[0]
            try:
                if fds:
                    socket.send_fds(client.sock, [data], fds)
                else:
                    client.sock.send(data)
            except BlockingIOError:
                break
            except OSError:  # the client left; what it asked for stays held (or claimed)
                self._drop(client)
                return
            client.outbox.popleft()
            for fd in fds:
                os.close(fd)
            client.waiting_since = time.monotonic() if client.outbox else None
        # Read no more requests from a client that does not read its replies.
        events = selectors.EVENT_WRITE if client.outbox else 0
        if len(client.outbox) < MAX_QUEUED:
            events |= selectors.EVENT_READ
        self.sel.modify(client.sock, events, client)

    def _drop(self, client: Client) -> None:
        self.sel.unregister(client.sock)
        del self.clients[client.sock]
        client.sock.close()
        for _, fds in client.outbox:
            for fd in fds:
                os.close(fd)
        client.outbox.clear()

    def _drop_slow_clients(self) -> None:
        now = time.monotonic()
        for client in list(self.clients.values()):
            if client.waiting_since is not None and now - client.waiting_since > SLOW_CLIENT:
                log.warning("dropped %s: it read no reply for %.0f s (%d waiting)", client.peer.describe(),
                            SLOW_CLIENT, len(client.outbox))
                self._drop(client)

    def _accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except BlockingIOError:
            return
        except OSError as e:
            self._pause_accepting(e)
            return
        try:
            peer = identify(conn)
        except PeerGone as e:
            log.info("a client left before it could be identified: %s", e)
            conn.close()
            return
        except OSError as e:  # no fd to read /proc with: the client may try again
            conn.close()
            self._pause_accepting(e)
            return
        if not peer.pidfd_checked and not self.warned_racy:
            log.warning("no SO_PEERPIDFD (Linux < 6.5): clients' groups and units are read by pid, which may be reused")
            self.warned_racy = True
        conn.setblocking(False)
        client = Client(conn, peer)
        self.clients[conn] = client
        self.sel.register(conn, selectors.EVENT_READ, client)

    def _pause_accepting(self, e: OSError) -> None:
        """Out of fds or memory: stop accepting for a second rather than spin or die;
        waiting clients stay queued in the backlog."""
        if e.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
            raise e
        log.error("cannot accept a client: %s; pausing", e.strerror)
        self.sel.unregister(self.listener)
        self.accepting_again = time.monotonic() + 1.0

    def serve(self, until: float | None = None) -> None:
        """Answer clients until ``until`` (time.monotonic()) or forever."""
        while until is None or time.monotonic() < until:
            self._maybe_finish()
            if self.watchdog is not None and time.monotonic() >= self.next_ping:
                daemon.notify("WATCHDOG=1")
                self.next_ping = time.monotonic() + self.watchdog
            if self.accepting_again is not None and time.monotonic() >= self.accepting_again:
                self.sel.register(self.listener, selectors.EVENT_READ)
                self.accepting_again = None
            for key, events in self.sel.select(timeout=min(1.0, self.watchdog or 1.0)):
                if key.fileobj is self.listener:
                    self._accept()
                    continue
                client = key.data
                if events & selectors.EVENT_WRITE:
                    self._flush(client)
                if events & selectors.EVENT_READ and client.sock in self.clients:
                    self._serve_one(client)
            self._drop_slow_clients()
