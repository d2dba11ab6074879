"""``python -m liveupdate`` and the ``liveupdate`` command.

Thin on purpose: parse the arguments, call the library, print text or
``--json``. Exit codes: 0 done, 1 the operation failed, 2 usage error.
Every failure is turned into a message (and exit code) in ``main`` only.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import grp
import json
import os
import shutil
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from . import __version__, abi, daemon, fs, protocol, system
from .client import AgentClient
from .device import Device, DeviceState
from .errors import LiveUpdateError
from .kexec import GetStatus, KexecError, SendEvent, live_update
from .logs import setup_daemon_logging

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_NOT_FOUND = 127  # as a shell reports a command it cannot find
EXIT_INTERRUPTED = 128 + signal.SIGINT  # as a shell reports a SIGINT


class Output:
    """Where a command's results go: text for people, JSON for programs."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def result(self, data: dict[str, Any], text: str) -> None:
        print(json.dumps(data) if self.as_json else text, flush=True)

    def progress(self, step: str, data: dict[str, Any]) -> None:
        """A step of a long command: a JSON line on stdout, or a line on stderr."""
        if self.as_json:
            print(json.dumps({"step": step, **data}), flush=True)
        else:
            details = " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in data.items())
            print(f"liveupdate: {step} {details}".rstrip(), file=sys.stderr, flush=True)

    def error(self, message: str, err: int | None) -> None:
        if self.as_json:
            print(json.dumps({"error": message, "errno": err}), flush=True)
        else:
            print(f"liveupdate: {message}", file=sys.stderr, flush=True)


def _state_dict(state: DeviceState | None) -> dict[str, Any]:
    data: dict[str, Any] = {"module_loaded": system.module_loaded(), "kho_enabled": system.kho_enabled()}
    if state is None:
        sysfs = system.sysfs_state()
        data["state"] = None if sysfs is None else sysfs.name.lower()
        data["device"] = "absent" if sysfs is None else "busy"
        return data
    data |= asdict(state)
    data["state"] = state.state.name.lower()
    data["device"] = "available"
    return data


def cmd_status(args: argparse.Namespace, out: Output) -> int:
    state = None
    if system.module_loaded():
        try:
            with Device() as dev:
                state = dev.get_state()
        except LiveUpdateError as e:
            if e.errno != errno.EBUSY:  # the agent holds it; sysfs still tells the state
                raise
    data = _state_dict(state)
    data["problems"] = system.problems()
    if state is None:
        text = f"state: {data['state'] or 'module not loaded'} (device {data['device']})"
        text += "".join(f"\nmissing: {problem}" for problem in data["problems"])
    else:
        text = "\n".join([
            f"state: {data['state']}",
            f"outgoing: {state.sessions} sessions, {state.files} files, {state.bytes_serialized} bytes serialized",
            f"incoming: {state.incoming_sessions} sessions, {state.incoming_files} files",
            f"format version: {state.format_version}",
            f"KHO: {'on' if data['kho_enabled'] else 'off'}, KHO boot: {'yes' if state.kho_boot else 'no'}",
        ])
    out.result(data, text)
    return EXIT_OK


@contextlib.contextmanager
def _controller(socket_path: str) -> Iterator[tuple[SendEvent, GetStatus]]:
    """Events and status through /dev/liveupdate, or through the agent when it holds the device."""
    try:
        dev = Device()
    except LiveUpdateError as e:
        if e.errno != errno.EBUSY or not os.path.exists(socket_path):
            raise
        with AgentClient(socket_path) as agent:
            yield (lambda event: agent.event(event.name.lower())), agent.status
        return
    with dev:
        yield (lambda event: asdict(dev.event(event))), (lambda: _state_dict(dev.get_state()))


def _event_command(event: abi.Event) -> Callable[[argparse.Namespace, Output], int]:
    def run(args: argparse.Namespace, out: Output) -> int:
        with _controller(args.socket) as (send, status):
            reply = send(event)
            state = status()["state"]
        data = {k: reply.get(k, 0) for k in ("released_sessions", "released_files", "released_bytes")}
        data |= {"event": event.name.lower(), "state": state}
        text = f"{event.name.lower()}: state is now {state}"
        if event == abi.Event.FINISH:
            text += (f"; released {data['released_sessions']} sessions and {data['released_files']} files "
                     f"never retrieved ({data['released_bytes']} bytes)")
        out.result(data, text)
        return EXIT_OK

    return run


def cmd_watch(args: argparse.Namespace, out: Output) -> int:
    from .watch import state_changes  # pyroute2 is needed by this command only

    seen = 0
    for change in state_changes(timeout=args.timeout):
        out.result(asdict(change), f"{change.event}: {change.state}")
        seen += 1
        if args.count and seen >= args.count:
            return EXIT_OK
    if args.count:
        out.error(f"saw {seen} of {args.count} state changes in {args.timeout} s", None)
        return EXIT_FAILED
    return EXIT_OK


def cmd_kexec(args: argparse.Namespace, out: Output) -> int:
    with _controller(args.socket) as (send, status):
        cmdline = args.append if args.append is not None else system.running_cmdline()
        live_update(send, status, args.kernel, args.initrd, cmdline, out.progress, force=args.force,
                    boot=args.boot_dir, modules=args.modules_dir)
    return EXIT_OK


def group_id(text: str) -> int:
    """A group given by name or number (argparse type)."""
    if text.isdigit():
        return int(text)
    try:
        return grp.getgrnam(text).gr_gid
    except KeyError:
        raise argparse.ArgumentTypeError(f"no group {text!r}") from None


def activated_listener(passed: dict[str, list[int]]) -> socket.socket | None:
    """Takes the listening SOCK_SEQPACKET socket out of the fds systemd passed, if any."""
    for name, fds in passed.items():
        for fd in fds:
            sock = socket.socket(fileno=fd)
            if sock.type == socket.SOCK_SEQPACKET and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                fds.remove(fd)
                if not fds:
                    del passed[name]
                return sock
            sock.detach()
    return None


def cmd_agent(args: argparse.Namespace, out: Output) -> int:
    from .agent import Agent  # the agent's imports are its own
    from .policy import load_policy

    setup_daemon_logging()
    passed = daemon.listen_fds()
    listener = activated_listener(passed)
    agent = Agent(load_policy(args.policy), args.socket, args.socket_group, listener)
    # A restart: the fd store gives back what the agent held; else a new kernel's take-over.
    held, incoming = agent.adopt(passed) if passed else (0, 0)
    taken = incoming or agent.take_over()
    where = "the socket systemd passed" if listener is not None else args.socket
    out.result({"socket": args.socket, "activated": listener is not None, "taken_over": taken, "adopted": held},
               f"liveupdated: listening on {where}; took over {taken} sessions, kept {held}")
    daemon.notify(f"READY=1\nSTATUS=took over {taken} sessions, kept {held}; serving clients")
    agent.serve()
    return EXIT_OK


def cmd_session_list(args: argparse.Namespace, out: Output) -> int:
    with AgentClient(args.socket) as agent:
        sessions = agent.sessions()
    lines = [f"{s['name']}: {'incoming' if s['incoming'] else 'outgoing'}, owner uid {s['owner']}, "
             f"tokens {', '.join(map(str, s['tokens'])) or '-'}" for s in sessions]
    out.result({"sessions": sessions}, "\n".join(lines) or "no sessions")
    return EXIT_OK


def cmd_session_preserve(args: argparse.Namespace, out: Output) -> int:
    # /proc/PID/fd/N names another process's memfd: opening it opens the same file.
    fd = os.open(args.path, os.O_RDWR | os.O_CLOEXEC)
    try:
        with AgentClient(args.socket) as agent:
            agent.preserve(args.session, fd, args.token, args.deps)
    finally:
        os.close(fd)
    out.result({"session": args.session, "token": args.token, "path": str(args.path)},
               f"preserved {args.path} in session {args.session!r} as token {args.token}")
    return EXIT_OK


def _exec_with_fd(command: list[str], fd: int, session: str, token: int) -> None:
    """Become ``command`` (execve: same pid), with ``fd`` as fd 3 the way systemd passes fds."""
    # LISTEN_* of our own caller name fds we do not pass on.
    env = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
    env |= {"LISTEN_FDS": "1", "LISTEN_PID": str(os.getpid()), "LISTEN_FDNAMES": f"{session}-{token}",
            "LIVEUPDATE_SESSION": session, "LIVEUPDATE_TOKEN": str(token)}
    os.dup2(fd, 3, inheritable=True)
    os.execvpe(command[0], command, env)


def cmd_session_retrieve(args: argparse.Namespace, out: Output) -> int:
    # Checked before anything is taken: a misspelled command costs nothing.
    if args.command is not None and (not args.command or shutil.which(args.command[0]) is None):
        out.error(f"cannot run {args.command[0] if args.command else 'nothing'!r}: no such command", errno.ENOENT)
        return EXIT_NOT_FOUND
    with AgentClient(args.socket) as agent:
        fd = agent.retrieve(args.session, args.token)
    try:
        if args.command is not None:
            _exec_with_fd(args.command, fd, args.session, args.token)  # returns only on failure
        # Guest memory is nobody else's business: the copy is the caller's alone.
        dest_fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with open(dest_fd, "wb") as dest, os.fdopen(os.dup(fd), "rb") as src:
            src.seek(0)
            shutil.copyfileobj(src, dest)
        out.result({"session": args.session, "token": args.token, "output": str(args.output)},
                   f"wrote token {args.token} of {args.session!r} to {args.output}")
        return EXIT_OK
    finally:
        os.close(fd)


def _mount_options(text: str) -> dict[str, str]:
    """``size=1g,mode=0700`` as a dict; a bare option (``noswap``) maps to ''."""
    options = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        if key == "session":
            raise argparse.ArgumentTypeError("give the session as SESSION, not in -o")
        options[key] = value
    return options


def cmd_fs_mount(args: argparse.Namespace, out: Output) -> int:
    instance = fs.mount(args.session, args.target, args.options)
    out.result(asdict(instance), f"mounted instance {instance.session!r} on {instance.mountpoint}")
    return EXIT_OK


def cmd_fs_list(args: argparse.Namespace, out: Output) -> int:
    found = fs.listing()
    lines = [f"{i.session}: {i.mountpoint}, {i.used_bytes} of {i.size_bytes} bytes used ({i.options})"
             for i in found.mounted] or ["no instance mounted"]
    if found.unmounted is None:
        lines.append("(mount the control instance to see instances mounted nowhere: mount -t liveupdatefs none DIR)")
    else:
        lines += [f"{name}: not mounted" for name in found.unmounted]
        lines += [f"{name}: carried by the previous kernel, to mount" for name in found.waiting or []]
    out.result({"instances": [asdict(i) for i in found.mounted], "unmounted": found.unmounted,
                "waiting": found.waiting}, "\n".join(lines))
    return EXIT_OK


def cmd_fs_remove(args: argparse.Namespace, out: Output) -> int:
    fs.remove(args.session)
    out.result({"removed": args.session}, f"removed instance {args.session!r}: it is carried no more")
    return EXIT_OK


def cmd_fs_state(args: argparse.Namespace, out: Output) -> int:
    now = fs.set_state(args.event) if args.event else fs.state()
    out.result({"state": now, "control": str(fs.control())}, now)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="liveupdate", description="Drive live updates through /dev/liveupdate.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    # Also after the subcommand; SUPPRESS keeps a --json given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON instead of text")
    common.add_argument("--socket", default=protocol.DEFAULT_SOCKET, help="the agent's socket")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("status", parents=[common], help="state, sessions, files, bytes, KHO").set_defaults(run=cmd_status)
    helps = {
        abi.Event.PREPARE: "serialize every preserved file into KHO",
        abi.Event.FREEZE: "record the last changes before the kexec",
        abi.Event.CANCEL: "undo prepare and freeze",
        abi.Event.FINISH: "release what the previous kernel handed over and nobody retrieved",
    }
    for event, text in helps.items():
        sub.add_parser(event.name.lower(), parents=[common], help=text).set_defaults(run=_event_command(event))

    watch = sub.add_parser("watch", parents=[common], help="print state changes as the kernel announces them")
    watch.add_argument("--count", type=int, default=0, help="stop after this many changes (fail if fewer come)")
    watch.add_argument("--timeout", type=float, default=None, help="stop after this many seconds without a change")
    watch.set_defaults(run=cmd_watch)

    kexec = sub.add_parser("kexec", parents=[common], help="load KERNEL with kexec -s, prepare, freeze, and jump")
    kexec.add_argument("kernel", type=Path, metavar="KERNEL")
    kexec.add_argument("--initrd", type=Path)
    kexec.add_argument("--append", help="the new kernel's command line (default: this kernel's, /proc/cmdline)")
    kexec.add_argument("--force", action="store_true",
                       help="load KERNEL even if it seems unable to take the sessions over (no KHO, no "
                       "liveupdate.ko for it, or one that reads another hand-over format)")
    kexec.add_argument("--boot-dir", type=Path, metavar="DIR",
                       help="where KERNEL's config is installed as config-RELEASE (default: /boot)")
    kexec.add_argument("--modules-dir", type=Path, metavar="DIR",
                       help="where KERNEL's modules are installed as RELEASE/... (default: /lib/modules)")
    kexec.set_defaults(run=cmd_kexec)

    agent = sub.add_parser("agent", parents=[common], help="run liveupdated, which holds sessions for services")
    agent.add_argument("--policy", type=Path, required=True, help="YAML policy file")
    agent.add_argument("--socket-group", type=group_id, metavar="GROUP",
                       help="group that may connect to the socket (mode 0660; default: root only)")
    agent.set_defaults(run=cmd_agent)

    session = sub.add_parser("session", help="sessions held by the agent").add_subparsers(
        dest="session_command", required=True, metavar="SUBCOMMAND")
    session.add_parser("list", parents=[common], help="sessions you may see").set_defaults(run=cmd_session_list)
    preserve = session.add_parser("preserve", parents=[common], help="hand a file (e.g. /proc/PID/fd/N) to the agent")
    preserve.add_argument("session")
    preserve.add_argument("token", type=int)
    preserve.add_argument("path", type=Path)
    preserve.add_argument("--deps", type=int, nargs="*", default=[], help="tokens this file depends on")
    preserve.set_defaults(run=cmd_session_preserve)
    retrieve = session.add_parser("retrieve", parents=[common], help="after the kexec: get a file back")
    retrieve.add_argument("session")
    retrieve.add_argument("token", type=int)
    target = retrieve.add_mutually_exclusive_group(required=True)
    target.add_argument("--output", type=Path, help="write the file's contents to this path")
    target.add_argument("--exec", dest="command", nargs=argparse.REMAINDER,
                        help="become this command (same pid), with the fd as fd 3 (LISTEN_FDS=1, LISTEN_PID)")
    retrieve.set_defaults(run=cmd_session_retrieve)

    fs_cmd = sub.add_parser("fs", help="liveupdatefs instances: filesystems whose files survive the kexec")
    fs_sub = fs_cmd.add_subparsers(dest="fs_command", required=True, metavar="SUBCOMMAND")
    fs_mount = fs_sub.add_parser("mount", parents=[common], help="mount SESSION's instance (new, or carried over)")
    fs_mount.add_argument("session")
    fs_mount.add_argument("target", type=Path)
    fs_mount.add_argument("-o", dest="options", type=_mount_options, default={}, metavar="OPTIONS",
                          help="tmpfs options for a new instance: size=, mode=, uid=, gid=, huge=")
    fs_mount.set_defaults(run=cmd_fs_mount)
    fs_sub.add_parser("list", parents=[common], help="instances: mounted or not").set_defaults(run=cmd_fs_list)
    fs_state = fs_sub.add_parser("state", parents=[common],
                                 help="the state, or run EVENT, through the mounted control instance")
    fs_state.add_argument("event", nargs="?", choices=fs.EVENTS, metavar="EVENT",
                          help="prepare, freeze, cancel or finish")
    fs_state.set_defaults(run=cmd_fs_state)
    fs_remove = fs_sub.add_parser("remove", parents=[common],
                                  help="discard SESSION's instance (unmounting keeps it)")
    fs_remove.add_argument("session")
    fs_remove.set_defaults(run=cmd_fs_remove)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # exits 2 on a usage error
    out = Output(args.json)
    try:
        status: int = args.run(args, out)
        return status
    except LiveUpdateError as e:
        out.error(str(e), e.errno)
    except (KexecError, ValueError, fs.FsError) as e:  # PolicyError is a ValueError
        out.error(str(e), None)
    except OSError as e:
        out.error(f"{e.filename or ''}: {e.strerror}".lstrip(": "), e.errno)
    except KeyboardInterrupt:
        out.error("interrupted", None)
        return EXIT_INTERRUPTED
    return EXIT_FAILED


def agent_main() -> int:
    """The ``liveupdated`` command: ``liveupdate agent`` under its own name."""
    return main(["agent", *sys.argv[1:]])
