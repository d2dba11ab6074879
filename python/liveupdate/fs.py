"""liveupdatefs: a session's instance as a mounted filesystem (kernel/lu_fs.c).

``mount()`` runs mount(8), since the standard library has no mount(2);
``instances()`` reads /proc/self/mountinfo, where an instance's source is
the name of its session. A mount without a session is the control
instance (its options say ``control``): ``state()`` and ``set_state()``
read and write its ``state`` file, ``remove()`` discards an instance
(which unmounting does not).
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


def _mounts(mountinfo: Path) -> list[tuple[str, str, str]]:
    """(source, mount point, super options) of each liveupdatefs mount."""
    found = []
    for line in mountinfo.read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, rest = left.split(), right.split(" ", 2)
        if len(fields) >= 5 and len(rest) == 3 and rest[0] == FSTYPE:
            found.append((_unescape(rest[1]), _unescape(fields[4]), rest[2]))
    return found


def _is_control(options: str) -> bool:
    return "control" in options.split(",")


def instances(mountinfo: Path = MOUNTINFO) -> list[Instance]:
    """Every mounted instance this process can see, in mount order."""
    found = []
    for source, mountpoint, options in _mounts(mountinfo):
        if _is_control(options):
            continue
        try:
            st = os.statvfs(mountpoint)
            used, size = (st.f_blocks - st.f_bfree) * st.f_frsize, st.f_blocks * st.f_frsize
        except OSError:  # hidden by a later mount on top, or gone meanwhile
            used = size = 0
        found.append(Instance(source, mountpoint, options, used, size))
    return found


def control(mountinfo: Path = MOUNTINFO) -> Path:
    """Where the control instance is mounted (the first such mount)."""
    for _, mountpoint, options in _mounts(mountinfo):
        if _is_control(options):
            return Path(mountpoint)
    raise FsError(f"no control instance mounted: mount -t {FSTYPE} none DIR")


def sessions(direction: str, mountinfo: Path = MOUNTINFO) -> dict[str, dict[str, str]]:
    """What the control instance's ``sessions/DIRECTION`` (outgoing or
    incoming) says of each session: state, instance (yes/no), files, bytes."""
    found = {}
    for entry in sorted((control(mountinfo) / "sessions" / direction).iterdir()):
        try:
            text = entry.read_text()
        except FileNotFoundError:  # ended meanwhile
            continue
        found[entry.name] = dict(line.split(" ", 1) for line in text.splitlines())
    return found


@dataclass(frozen=True)
class Listing:
    """Every instance: the mounted ones, and, through a mounted control
    instance (else None), the ones mounted nowhere here and the ones the
    previous kernel carried that nobody took over yet."""

    mounted: list[Instance]
    unmounted: list[str] | None
    waiting: list[str] | None


def listing(mountinfo: Path = MOUNTINFO) -> Listing:
    mounted = instances(mountinfo)
    try:
        outgoing, incoming = sessions("outgoing", mountinfo), sessions("incoming", mountinfo)
    except FsError:
        return Listing(mounted, None, None)
    names = {i.session for i in mounted}
    unmounted = [n for n, info in outgoing.items() if info.get("instance") == "yes" and n not in names]
    waiting = [n for n, info in incoming.items() if info.get("instance") == "yes" and info.get("state") == "pending"]
    return Listing(mounted, unmounted, waiting)


EVENTS = ("prepare", "freeze", "cancel", "finish")


def state(mountinfo: Path = MOUNTINFO) -> str:
    """The live update's state, from the control instance: normal, prepared, ..."""
    return (control(mountinfo) / "state").read_text().strip()


def set_state(event: str, mountinfo: Path = MOUNTINFO) -> str:
    """Run ``event`` (prepare, freeze, cancel, finish) through the control
    instance; return the state after it. The kernel's error is raised as
    an OSError naming the event."""
    if event not in EVENTS:
        raise ValueError(f"event {event!r}: one of {', '.join(EVENTS)}")
    path = control(mountinfo) / "state"
    try:
        path.write_text(event)
    except OSError as e:
        raise OSError(e.errno, f"{event} through {path}: {e.strerror}") from None
    return state(mountinfo)


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


def remove(session: str, mountinfo: Path = MOUNTINFO) -> None:
    """Discard ``session``'s instance: it is carried no more, and its files
    go with its last mount. Refused (EBUSY) between PREPARE and CANCEL;
    EPERM for a session that is not an instance."""
    check_session_name(session)
    path = control(mountinfo) / "sessions" / "outgoing" / session
    try:
        path.unlink()
    except OSError as e:
        raise OSError(e.errno, f"remove instance {session}: {e.strerror}") from None
