"""liveupdate: Python binding of the loadable Live Update Orchestrator."""

__version__ = "0.4.0"

from .abi import Event, State
from .client import AgentClient, connect
from .device import DEVICE_PATH, Device, DeviceState, EventResult, Session, ioctl_call
from .errors import LiveUpdateError
from .holder import hold_fds_until_kexec

__all__ = [
    "DEVICE_PATH",
    "AgentClient",
    "Device",
    "DeviceState",
    "Event",
    "EventResult",
    "LiveUpdateError",
    "Session",
    "State",
    "__version__",
    "connect",
    "hold_fds_until_kexec",
    "ioctl_call",
]
