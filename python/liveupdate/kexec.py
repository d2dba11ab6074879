"""A live update in one call: check the next kernel, load it, prepare, freeze, jump.

Each step reports through ``progress``; a failing step undoes what the
earlier ones did (CANCEL, unload the kernel) and raises. A kernel that
could not take the sessions over (target.py) is refused before anything
is loaded, unless ``force``.
"""

from __future__ import annotations

import errno
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import abi, system, target
from .errors import LiveUpdateError

Progress = Callable[[str, dict[str, Any]], None]
# Sends an event, through /dev/liveupdate or the agent that holds it; returns the reply.
SendEvent = Callable[[abi.Event], dict[str, Any]]
# The state machine's status: at least "state", "sessions", "files", "bytes_serialized".
GetStatus = Callable[[], dict[str, Any]]


class KexecError(RuntimeError):
    """The kexec tool failed; the message holds what it printed."""


def _kexec(*args: str) -> None:
    tool = shutil.which("kexec")
    if tool is None:
        raise KexecError("kexec not found: install kexec-tools")
    done = subprocess.run([tool, *args], capture_output=True, text=True)
    if done.returncode:
        raise KexecError(f"kexec {' '.join(args)}: {done.stderr.strip() or f'exit {done.returncode}'}")


def check_ready() -> None:
    """Refuse early, with the reason, when a live update cannot work here."""
    if not system.kho_enabled():
        raise LiveUpdateError(errno.EOPNOTSUPP, "kexec", "KHO is off: boot with kho=on")
    if not system.module_loaded():
        raise LiveUpdateError(errno.ENODEV, "kexec", "module not loaded: insmod liveupdate.ko")


def check_target(kernel: Path, writes: int, force: bool, progress: Progress,
                 boot: Path | None = None, modules: Path | None = None) -> None:
    """Refuse a kernel that cannot take a hand-over of format ``writes`` over, unless ``force``
    (its config and modules are looked for under ``boot`` and ``modules``, by default
    target.BOOT and target.MODULES)."""
    found = target.check(kernel, writes, boot, modules)
    facts = {"release": found.release, "config": str(found.config) if found.config else None,
             "module": str(found.module) if found.module else None}
    if found.problems and not force:
        raise LiveUpdateError(errno.ENOEXEC, f"kexec {kernel}",
                              "; ".join(found.problems) + "; --force loads it anyway")
    progress("checked", facts | {"problems": found.problems, "forced": bool(found.problems)})


def live_update(
    send: SendEvent, status: GetStatus, kernel: Path, initrd: Path | None, cmdline: str, progress: Progress,
    force: bool = False, boot: Path | None = None, modules: Path | None = None,
) -> None:
    """Check ``kernel``, load it with ``kexec -s``, PREPARE, FREEZE, then ``kexec -e``."""
    check_ready()
    now = status()
    if now["state"] != "normal":
        raise LiveUpdateError(errno.EBUSY, "kexec", f"the state is {now['state']}, not normal")
    check_target(kernel, now["format_version"], force, progress, boot, modules)
    args = ["-s", "-l", str(kernel), f"--command-line={cmdline}"]
    if initrd is not None:
        args.append(f"--initrd={initrd}")
    _kexec(*args)
    progress("loaded", {"kernel": str(kernel)})
    prepared = False
    try:
        start = time.monotonic()
        send(abi.Event.PREPARE)
        prepared = True
        now = status()
        progress("prepared", {"seconds": time.monotonic() - start, "bytes": now["bytes_serialized"],
                              "sessions": now["sessions"], "files": now["files"]})
        start = time.monotonic()
        send(abi.Event.FREEZE)
        progress("frozen", {"seconds": time.monotonic() - start})
        progress("kexec", {})
        _kexec("-e")
        raise KexecError("kexec -e returned")
    except BaseException:
        try:
            if prepared:
                send(abi.Event.CANCEL)
                progress("cancelled", {})
        finally:  # the loaded kernel goes, even if CANCEL failed
            _kexec("-u")
            progress("unloaded", {})
        raise
