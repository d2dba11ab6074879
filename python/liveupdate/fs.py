"""liveupdatefs: a session's instance as a mounted filesystem (kernel/lu_fs.c).

``mount()`` runs mount(8), since the standard library has no mount(2);
``instances()`` reads /proc/self/mountinfo, where an instance's source is
the name of its session.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

FSTYPE = "liveupdatefs"
MOUNTINFO = Path("/proc/self/mountinfo")
NAME_MAX = 63  # LIVEUPDATE_SESSION_NAME_LENGTH - 1


class FsError(Exception):
    """A liveupdatefs operation failed; the message says which and why."""


@dataclass(frozen=True)
class Instance:
    """A mounted instance: its session, where it is mounted, its tmpfs
    options, and the bytes its files use of its capacity."""

    session: str
    mountpoint: str
    options: str
    used_bytes: int
    size_bytes: int


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def instances(mountinfo: Path = MOUNTINFO) -> list[Instance]:
    """Every liveupdatefs mount this process can see, in mount order."""
    found = []
    for line in mountinfo.read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, rest = left.split(), right.split(" ", 2)
        if len(fields) < 5 or len(rest) < 3 or rest[0] != FSTYPE:
            continue
        mountpoint = _unescape(fields[4])
        try:
            st = os.statvfs(mountpoint)
            used, size = (st.f_blocks - st.f_bfree) * st.f_frsize, st.f_blocks * st.f_frsize
        except OSError:  # hidden by a later mount on top, or gone meanwhile
            used = size = 0
        found.append(Instance(_unescape(rest[1]), mountpoint, rest[2], used, size))
    return found


def check_session_name(name: str) -> None:
    """Raise ValueError unless ``name`` is a session name mount -o can carry."""
    if not name or len(name.encode()) > NAME_MAX:
        raise ValueError(f"session names are 1 to {NAME_MAX} bytes, not {len(name.encode())}")
    if any(c in name for c in ",= \t\n\\") or "\0" in name:
        raise ValueError(f"session name {name!r}: a mount option cannot carry ',', '=', blanks or '\\'")


def mount(session: str, target: Path, options: dict[str, str] | None = None) -> Instance:
    """Mount the instance of ``session`` on ``target``: made if new, taken
    over if the previous kernel carried it. ``options`` (tmpfs's: size,
    mode, uid, gid, huge, ...) apply only when the instance is made."""
    check_session_name(session)
    opts = [f"session={session}", *(f"{key}={value}" for key, value in (options or {}).items())]
    result = subprocess.run(["mount", "-t", FSTYPE, "-o", ",".join(opts), session, str(target)],
                            capture_output=True, text=True, check=False)
    if result.returncode:
        reason = result.stderr.strip() or f"mount exited with {result.returncode}"
        raise FsError(f"mount {session} on {target}: {reason} (the kernel log says why)")
    where = os.path.realpath(target)
    for instance in reversed(instances()):
        if instance.mountpoint == where:
            return instance
    raise FsError(f"mount {session} on {target}: mounted, but not found in {MOUNTINFO}")
