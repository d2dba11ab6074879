"""In-guest pytest support: stage selection and fds held across the kexec.

The QEMU runner sets LU_STAGE (which kernel of the plan this is) and LU_OUT
(a host directory that survives the kexecs). A test marked
``@pytest.mark.stage(N)`` runs only in kernel N.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "stage(n): run only in the plan's nth kernel")


def pytest_runtest_setup(item: pytest.Item) -> None:
    marker = item.get_closest_marker("stage")
    if marker is None:
        return
    current = int(os.environ.get("LU_STAGE", "0"))
    if marker.args[0] != current:
        pytest.skip(f"runs in kernel {marker.args[0]}, this is kernel {current}")


class Carry:
    """Facts a stage leaves for the next, in LU_OUT (the host's disk)."""

    def __init__(self, name: str) -> None:
        self.path = Path(os.environ.get("LU_OUT", "/tmp")) / f"{name}.json"

    def save(self, data: dict[str, Any]) -> None:
        self.path.write_text(json.dumps(data))

    def load(self) -> dict[str, Any]:
        return json.loads(self.path.read_text())
