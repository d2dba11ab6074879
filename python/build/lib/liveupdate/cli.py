"""``python -m liveupdate`` and the ``liveupdate`` command.

Thin on purpose: parse the arguments, call the library, print text or
``--json``. Exit codes: 0 done, 1 the operation failed, 2 usage error.
Every failure is turned into a message (and exit code) in ``main`` only.
"""

from __future__ import annotations

import argparse
import errno
import json
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from . import abi, system
from .device import Device, DeviceState, EventResult
from .errors import LiveUpdateError
from .kexec import KexecError, live_update

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class Output:
    """Where a command's results go: text for people, JSON for programs."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def result(self, data: dict, text: str) -> None:
        print(json.dumps(data) if self.as_json else text, flush=True)

    def progress(self, step: str, data: dict) -> None:
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


def _state_dict(state: DeviceState | None) -> dict:
    data = {"module_loaded": system.module_loaded(), "kho_enabled": system.kho_enabled()}
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
    if state is None:
        text = f"state: {data['state'] or 'module not loaded'} (device {data['device']})"
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


def _event_command(event: abi.Event) -> Callable[[argparse.Namespace, Output], int]:
    def run(args: argparse.Namespace, out: Output) -> int:
        with Device() as dev:
            result: EventResult = dev.event(event)
            state = dev.get_state().state
        data = asdict(result) | {"event": event.name.lower(), "state": state.name.lower()}
        text = f"{event.name.lower()}: state is now {state.name.lower()}"
        if event == abi.Event.FINISH:
            text += (f"; released {result.released_sessions} sessions and {result.released_files} files "
                     f"never retrieved ({result.released_bytes} bytes)")
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
    with Device() as dev:
        live_update(dev, args.kernel, args.initrd, args.append, out.progress)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="liveupdate", description="Drive live updates through /dev/liveupdate.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print JSON instead of text")
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
    kexec.add_argument("--append", default="", help="the new kernel's command line")
    kexec.set_defaults(run=cmd_kexec)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # exits 2 on a usage error
    out = Output(args.json)
    try:
        return args.run(args, out)
    except LiveUpdateError as e:
        out.error(str(e), e.errno)
    except KexecError as e:
        out.error(str(e), None)
    except OSError as e:
        out.error(f"{e.filename or ''}: {e.strerror}".lstrip(": "), e.errno)
    except KeyboardInterrupt:
        out.error("interrupted", None)
    return EXIT_FAILED
