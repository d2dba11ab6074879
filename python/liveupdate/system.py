"""Facts about this machine that the device does not report.

Read from /proc and /sys only: whether KHO is on (the ``kho=`` boot
parameter), whether the module is loaded, and the state sysfs shows
without opening /dev/liveupdate (which the agent may hold).
"""

from __future__ import annotations

from pathlib import Path

from . import abi

CMDLINE = Path("/proc/cmdline")
MODULE_DIR = Path("/sys/module/liveupdate")
STATE_FILE = Path("/sys/class/misc/liveupdate/state")


def kho_enabled(cmdline: str | None = None) -> bool:
    """Whether the running kernel was booted with KHO on (``kho=on``, ``kho=1``, ``kho=y``)."""
    words = (cmdline if cmdline is not None else CMDLINE.read_text()).split()
    values = [w.split("=", 1)[1].lower() for w in words if w.startswith("kho=")]
    return bool(values) and values[-1] in ("on", "1", "y", "yes", "true")


def running_cmdline() -> str:
    """The running kernel's command line: the default for the next one."""
    return CMDLINE.read_text().strip()


def module_loaded() -> bool:
    return MODULE_DIR.is_dir()


def sysfs_state() -> abi.State | None:
    """The state as sysfs shows it, or None without the module."""
    try:
        return abi.State[STATE_FILE.read_text().strip().upper()]
    except (OSError, KeyError):
        return None
