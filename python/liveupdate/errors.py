"""Exceptions of the liveupdate package: each says what failed and what to do."""

from __future__ import annotations

import errno
import os


class LiveUpdateError(OSError):
    """An operation on /dev/liveupdate or a session failed.

    ``errno`` holds the kernel's error number; the message names the
    operation, the kernel's reason and, where one is known, a next step.
    """

    def __init__(self, err: int, operation: str, hint: str = "") -> None:
        reason = os.strerror(err)
        message = f"{operation}: {reason}" + (f" ({hint})" if hint else "")
        super().__init__(err, message)
        self.operation = operation
        self.hint = hint

    def __str__(self) -> str:
        return self.strerror or ""


# Hints for errors whose cause is usually the same, by (operation, errno).
_OPEN_HINTS = {
    errno.ENOENT: "module not loaded: insmod liveupdate.ko",
    errno.ENODEV: "module not loaded: insmod liveupdate.ko",
    errno.EBUSY: "another process holds /dev/liveupdate; only one may open it",
    errno.EACCES: "the device is 0600 root:root; run as root or change its mode",
}

_TABLE_FULL = "the hand-over table is full (256 MiB); close sessions that need not be carried"

_IOCTL_HINTS = {
    "create_session": {
        errno.EEXIST: "an outgoing session has this name; close it or pick another",
        errno.EINVAL: "names are 1 to 63 bytes",
        errno.EBUSY: "the state is FROZEN (cancel first) or the kexec reboot has started",
        errno.ENOSPC: _TABLE_FULL,
    },
    "retrieve_session": {
        errno.ENOENT: "the previous kernel handed over no session of this name",
        errno.EINVAL: "already retrieved, or a bad name",
    },
    "preserve": {
        errno.EEXIST: "the token is used in this session already",
        errno.EBADF: "the fd is not open",
        errno.ENOENT: "no handler can preserve this kind of file (memfds can)",
        errno.EBUSY: "the file is preserved in a session already, or the state is FROZEN",
        errno.EINVAL: "files can be preserved only in sessions created in this kernel; "
        "dependencies: at most 16 distinct tokens, not the file's own",
        errno.ENOSPC: _TABLE_FULL,
    },
    "retrieve": {
        errno.ENOPKG: "the module that carries this kind of file is not loaded",
        errno.ENOENT: "no file with this token in the session, or it is finished",
        errno.EINVAL: "files can be retrieved only from retrieved sessions",
        errno.EIO: "the preserved data is damaged; see the kernel log",
    },
    "finish": {
        errno.EINVAL: "only retrieved sessions can be finished",
        errno.EBUSY: "FINISH ends the UPDATED state only; see the state",
    },
    "prepare": {
        errno.EBUSY: "PREPARE needs the NORMAL state; cancel or finish first",
        errno.ENOENT: "a file depends on a token its session lacks",
        errno.ELOOP: "files of a session depend on each other in a cycle",
    },
    "freeze": {
        errno.EBUSY: "FREEZE needs the PREPARED state; prepare first",
    },
    "cancel": {
        errno.EBUSY: "nothing to cancel: the state is not PREPARED or FROZEN",
    },
}


def open_error(err: int | None, path: str) -> LiveUpdateError:
    err = errno.EIO if err is None else err
    return LiveUpdateError(err, f"open {path}", _OPEN_HINTS.get(err, ""))


def ioctl_error(err: int | None, operation: str, what: str) -> LiveUpdateError:
    err = errno.EIO if err is None else err
    hint = _IOCTL_HINTS.get(operation, {}).get(err, "")
    return LiveUpdateError(err, f"{operation} {what}".strip(), hint)
