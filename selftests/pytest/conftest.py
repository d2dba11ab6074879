"""In-guest pytest support: stage selection and fds held across the kexec.

The QEMU runner sets LU_STAGE (which kernel of the plan this is) and LU_OUT
(a host directory that survives the kexecs). A test marked
``@pytest.mark.stage(N)`` runs only in kernel N: tests of other kernels are
deselected, not skipped, and a run without a valid LU_STAGE is an error,
so that the runner's count of passed tests proves what ran.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from liveupdate import target
from liveupdate.cli import main as cli_main

# How long one CLI process or wait may take: a TCG guest on a debug kernel
# next to another guest is slow and uneven. A wait ends as soon as its
# condition holds.
PATIENCE = 300


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "stage(n): run only in the plan's nth kernel")


def current_stage() -> int:
    value = os.environ.get("LU_STAGE", "")
    if not value.isdigit() or int(value) < 1:
        raise pytest.UsageError(f"LU_STAGE must name the plan's kernel (1, 2, ...), not {value!r}")
    return int(value)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    staged = [item for item in items if item.get_closest_marker("stage") is not None]
    if not staged:
        return
    current = current_stage()
    selected, deselected = [], []
    for item in items:
        marker = item.get_closest_marker("stage")
        (selected if marker is None or marker.args[0] == current else deselected).append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
    items[:] = selected


class Carry:
    """Facts a stage leaves for the next, in LU_OUT (the host's disk)."""

    def __init__(self, name: str) -> None:
        self.path = Path(os.environ.get("LU_OUT", "/tmp")) / f"{name}.json"

    def save(self, data: dict[str, Any]) -> None:
        self.path.write_text(json.dumps(data))

    def load(self) -> dict[str, Any]:
        return json.loads(self.path.read_text())


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``liveupdate ARGS`` run by the CLI's main() in this process.

    Its exit code, stdout and stderr, as from a process: a new interpreter
    costs several seconds in the debug guest. cli_process() runs a real
    one, for what needs its own process (--exec, the entry point itself).
    """
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli_main(list(args))
        except SystemExit as e:  # argparse's usage errors
            code = e.code if isinstance(e.code, int) else 1
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def cli_process(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m liveupdate ARGS`` in a process of its own (``env``: added to ours)."""
    return subprocess.run([sys.executable, "-m", "liveupdate", *args], capture_output=True, text=True,
                          timeout=PATIENCE, env=os.environ | (env or {}))


# Where the guest installs the next kernel: the root is the host's, read-only,
# and may have no /lib/modules to mount over (a container's).
NEXT_KERNEL = Path("/tmp/next-kernel")


def install_next_kernel() -> list[str]:
    """Install the next kernel as a host has it, for ``liveupdate kexec``'s
    check (target.py): its config as boot/config-RELEASE and liveupdate.ko
    where DKMS puts it, under NEXT_KERNEL. Returns the options that name
    those places."""
    kernel = Path(os.environ["LU_KERNEL"])
    release = target.image_release(kernel)
    boot, modules = NEXT_KERNEL / "boot", NEXT_KERNEL / "modules"
    dkms = modules / release / "updates/dkms"
    dkms.mkdir(parents=True, exist_ok=True)
    boot.mkdir(exist_ok=True)
    # LU_KERNEL is BUILD/arch/x86/boot/bzImage.
    shutil.copy(kernel.parents[3] / ".config", boot / f"config-{release}")
    shutil.copy(os.environ["LU_MODULE"], dkms / "liveupdate.ko")
    return ["--boot-dir", str(boot), "--modules-dir", str(modules)]
