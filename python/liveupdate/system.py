"""Facts about this machine that the device does not report.

Read from /proc, /sys and the running kernel's installed config only:
whether KHO is on (the ``kho=`` boot parameter), whether the module is
loaded, the state sysfs shows without opening /dev/liveupdate (which the
agent may hold), and what stands in the way of a live update here.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import abi, target

CMDLINE = Path("/proc/cmdline")
MODULE_DIR = Path("/sys/module/liveupdate")
STATE_FILE = Path("/sys/class/misc/liveupdate/state")
DEVICE = Path("/dev/liveupdate")


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


def problems() -> list[str]:
    """What keeps a live update from working on this machine, each with what to do."""
    found = []
    config_path = target.BOOT / f"config-{os.uname().release}"
    config = target.read_config(config_path) if config_path.is_file() else None
    mainline = (config or {}).get("CONFIG_LIVEUPDATE") == "y" or (DEVICE.exists() and not module_loaded())
    if config is not None and config.get("CONFIG_KEXEC_HANDOVER") != "y":
        found.append(f"this kernel has no KHO (CONFIG_KEXEC_HANDOVER is not set in {config_path}): "
                     "build one with it")
    elif not kho_enabled():
        found.append("KHO is off: boot with kho=on")
    if mainline:
        found.append("mainline's LUO is built into this kernel (CONFIG_LIVEUPDATE=y) and owns /dev/liveupdate: "
                     "liveupdate.ko cannot load; build the kernel without it")
    elif not module_loaded():
        found.append("liveupdate.ko is not loaded: modprobe liveupdate (package liveupdate-dkms)")
    return found
