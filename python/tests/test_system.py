"""`liveupdate status` says what keeps a live update from working here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from liveupdate import system, target


@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A machine of files: /proc/cmdline, /boot, /sys/module/liveupdate, /dev/liveupdate."""
    for name in ("boot", "module"):
        (tmp_path / name).mkdir()
    (tmp_path / "cmdline").write_text("root=/dev/vda kho=on\n")
    (tmp_path / f"boot/config-{os.uname().release}").write_text("CONFIG_KEXEC_HANDOVER=y\n")
    monkeypatch.setattr(system, "CMDLINE", tmp_path / "cmdline")
    monkeypatch.setattr(system, "MODULE_DIR", tmp_path / "module")
    monkeypatch.setattr(system, "DEVICE", tmp_path / "device")
    monkeypatch.setattr(target, "BOOT", tmp_path / "boot")
    return tmp_path


def test_a_ready_machine_has_no_problem(machine: Path) -> None:
    (machine / "device").touch()
    assert system.problems() == []


def test_kho_off(machine: Path) -> None:
    (machine / "cmdline").write_text("root=/dev/vda\n")
    assert system.problems() == ["KHO is off: boot with kho=on"]


def test_a_kernel_without_kho(machine: Path) -> None:
    (machine / f"boot/config-{os.uname().release}").write_text("# CONFIG_KEXEC_HANDOVER is not set\n")
    assert "this kernel has no KHO" in system.problems()[0]


def test_module_absent(machine: Path) -> None:
    (machine / "module").rmdir()
    assert system.problems() == ["liveupdate.ko is not loaded: modprobe liveupdate (package liveupdate-dkms)"]


@pytest.mark.parametrize("how", ["config", "device"])
def test_mainline_luo_built_in(machine: Path, how: str) -> None:
    """Known from the kernel's config, or from a /dev/liveupdate that no module provides."""
    if how == "config":
        (machine / f"boot/config-{os.uname().release}").write_text("CONFIG_KEXEC_HANDOVER=y\nCONFIG_LIVEUPDATE=y\n")
    else:
        (machine / "device").touch()
        (machine / "module").rmdir()
    problems = system.problems()
    assert len(problems) == 1 and "mainline's LUO is built into this kernel" in problems[0]
