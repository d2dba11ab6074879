"""Every ioctl number and struct layout of /dev/liveupdate, in one place.

Mirrors kernel/include/uapi/linux/liveupdate.h. Numbers are computed the
way the kernel's _IO() macro computes them; layouts are struct.Struct in
native byte order without implicit padding ("="): every struct here is laid
out so that C adds no padding either, which the layout test checks.
"""

from __future__ import annotations

import enum
import struct

IOCTL_TYPE = 0xBA
SESSION_NAME_LENGTH = 64

# asm-generic/ioctl.h
_IOC_NRSHIFT = 0
_IOC_TYPESHIFT = 8
_IOC_SIZESHIFT = 16
_IOC_DIRSHIFT = 30
_IOC_NONE = 0


def _IOC(direction: int, type_: int, nr: int, size: int) -> int:
    return (
        (direction << _IOC_DIRSHIFT)
        | (type_ << _IOC_TYPESHIFT)
        | (nr << _IOC_NRSHIFT)
        | (size << _IOC_SIZESHIFT)
    )


def _IO(type_: int, nr: int) -> int:
    return _IOC(_IOC_NONE, type_, nr, 0)


CMD_CREATE_SESSION = 0x00
CMD_RETRIEVE_SESSION = 0x01
CMD_SESSION_PRESERVE_FD = 0x40
CMD_SESSION_RETRIEVE_FD = 0x41
CMD_SESSION_FINISH = 0x42
CMD_SESSION_GET_NAME = 0x43

# This module's extensions (mainline leaves 0x80 and up free).
CMD_GET_STATE = 0x80
CMD_SET_EVENT = 0x81
CMD_SESSION_PRESERVE_FD_DEPS = 0xC0
MAX_DEPS = 16

IOCTL_CREATE_SESSION = _IO(IOCTL_TYPE, CMD_CREATE_SESSION)
IOCTL_RETRIEVE_SESSION = _IO(IOCTL_TYPE, CMD_RETRIEVE_SESSION)
SESSION_PRESERVE_FD = _IO(IOCTL_TYPE, CMD_SESSION_PRESERVE_FD)
SESSION_RETRIEVE_FD = _IO(IOCTL_TYPE, CMD_SESSION_RETRIEVE_FD)
SESSION_FINISH = _IO(IOCTL_TYPE, CMD_SESSION_FINISH)
SESSION_GET_NAME = _IO(IOCTL_TYPE, CMD_SESSION_GET_NAME)
IOCTL_GET_STATE = _IO(IOCTL_TYPE, CMD_GET_STATE)
IOCTL_SET_EVENT = _IO(IOCTL_TYPE, CMD_SET_EVENT)
SESSION_PRESERVE_FD_DEPS = _IO(IOCTL_TYPE, CMD_SESSION_PRESERVE_FD_DEPS)


class State(enum.IntEnum):
    """enum liveupdate_state."""

    NORMAL = 0
    PREPARED = 1
    FROZEN = 2
    UPDATED = 3


class Event(enum.IntEnum):
    """enum liveupdate_event."""

    PREPARE = 1
    FREEZE = 2
    CANCEL = 3
    FINISH = 4


STATE_KHO_BOOT = 1 << 0  # liveupdate_get_state.flags
FS_TREE_TOKEN = (1 << 64) - 1  # LIVEUPDATE_FS_TREE_TOKEN: an instance's root directory

# struct liveupdate_ioctl_create_session / _retrieve_session:
#   __u32 size; __s32 fd; __u8 name[64];
CREATE_SESSION = struct.Struct("=Ii64s")
RETRIEVE_SESSION = CREATE_SESSION
# struct liveupdate_session_preserve_fd / _retrieve_fd:
#   __u32 size; __s32 fd; __aligned_u64 token;
PRESERVE_FD = struct.Struct("=IiQ")
RETRIEVE_FD = PRESERVE_FD
# struct liveupdate_session_finish: __u32 size; __u32 reserved;
FINISH = struct.Struct("=II")
# struct liveupdate_session_get_name: __u32 size; __u32 reserved; __u8 name[64];
GET_NAME = struct.Struct("=II64s")

# struct liveupdate_get_state: __u32 size, state, flags, format_version,
#   nr_sessions, nr_files, nr_incoming_sessions, nr_incoming_files;
#   __aligned_u64 nr_bytes;
GET_STATE = struct.Struct("=IIIIIIIIQ")
# struct liveupdate_set_event: __u32 size, event, nr_sessions, nr_files;
#   __aligned_u64 nr_bytes, err_token; __u8 err_session[64];
SET_EVENT = struct.Struct("=IIIIQQ64s")
# struct liveupdate_session_preserve_fd_deps: __u32 size; __s32 fd;
#   __aligned_u64 token, deps (a user pointer); __u32 nr_deps, reserved;
PRESERVE_FD_DEPS = struct.Struct("=IiQQII")

# name -> (ioctl number, layout, {field: offset}); the layout test compares
# every entry with the C header.
COMMANDS: dict[str, tuple[int, struct.Struct, dict[str, int]]] = {
    "LIVEUPDATE_IOCTL_CREATE_SESSION": (
        IOCTL_CREATE_SESSION, CREATE_SESSION, {"size": 0, "fd": 4, "name": 8}),
    "LIVEUPDATE_IOCTL_RETRIEVE_SESSION": (
        IOCTL_RETRIEVE_SESSION, RETRIEVE_SESSION, {"size": 0, "fd": 4, "name": 8}),
    "LIVEUPDATE_SESSION_PRESERVE_FD": (
        SESSION_PRESERVE_FD, PRESERVE_FD, {"size": 0, "fd": 4, "token": 8}),
    "LIVEUPDATE_SESSION_RETRIEVE_FD": (
        SESSION_RETRIEVE_FD, RETRIEVE_FD, {"size": 0, "fd": 4, "token": 8}),
    "LIVEUPDATE_SESSION_FINISH": (
        SESSION_FINISH, FINISH, {"size": 0, "reserved": 4}),
    "LIVEUPDATE_SESSION_GET_NAME": (
        SESSION_GET_NAME, GET_NAME, {"size": 0, "reserved": 4, "name": 8}),
    "LIVEUPDATE_IOCTL_GET_STATE": (
        IOCTL_GET_STATE, GET_STATE,
        {"size": 0, "state": 4, "flags": 8, "format_version": 12, "nr_sessions": 16, "nr_files": 20,
         "nr_incoming_sessions": 24, "nr_incoming_files": 28, "nr_bytes": 32}),
    "LIVEUPDATE_IOCTL_SET_EVENT": (
        IOCTL_SET_EVENT, SET_EVENT,
        {"size": 0, "event": 4, "nr_sessions": 8, "nr_files": 12, "nr_bytes": 16, "err_token": 24,
         "err_session": 32}),
    "LIVEUPDATE_SESSION_PRESERVE_FD_DEPS": (
        SESSION_PRESERVE_FD_DEPS, PRESERVE_FD_DEPS,
        {"size": 0, "fd": 4, "token": 8, "deps": 16, "nr_deps": 24, "reserved": 28}),
}

# The commands that mainline Linux 7.2 defines too: identical there.
EXTENSIONS = ("LIVEUPDATE_IOCTL_GET_STATE", "LIVEUPDATE_IOCTL_SET_EVENT", "LIVEUPDATE_SESSION_PRESERVE_FD_DEPS")
MAINLINE_COMMANDS = [name for name in COMMANDS if name not in EXTENSIONS]

# Which C struct each command takes, for the layout test.
STRUCTS = {
    "LIVEUPDATE_IOCTL_CREATE_SESSION": "liveupdate_ioctl_create_session",
    "LIVEUPDATE_IOCTL_RETRIEVE_SESSION": "liveupdate_ioctl_retrieve_session",
    "LIVEUPDATE_SESSION_PRESERVE_FD": "liveupdate_session_preserve_fd",
    "LIVEUPDATE_SESSION_RETRIEVE_FD": "liveupdate_session_retrieve_fd",
    "LIVEUPDATE_SESSION_FINISH": "liveupdate_session_finish",
    "LIVEUPDATE_SESSION_GET_NAME": "liveupdate_session_get_name",
    "LIVEUPDATE_IOCTL_GET_STATE": "liveupdate_get_state",
    "LIVEUPDATE_IOCTL_SET_EVENT": "liveupdate_set_event",
    "LIVEUPDATE_SESSION_PRESERVE_FD_DEPS": "liveupdate_session_preserve_fd_deps",
}
