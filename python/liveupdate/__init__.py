"""liveupdate: Python binding of the loadable Live Update Orchestrator."""

from .device import DEVICE_PATH, Device, Session, ioctl_call
from .errors import LiveUpdateError
from .holder import hold_fds_until_kexec

__all__ = ["DEVICE_PATH", "Device", "LiveUpdateError", "Session", "hold_fds_until_kexec", "ioctl_call"]
