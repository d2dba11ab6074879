"""liveupdate: Python binding of the loadable Live Update Orchestrator."""

from .device import DEVICE_PATH, Device, Session, ioctl_call
from .errors import LiveUpdateError

__all__ = ["DEVICE_PATH", "Device", "LiveUpdateError", "Session", "ioctl_call"]
