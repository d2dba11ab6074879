"""What the packages and the hooks that load the module before PID 1 rely on."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

import liveupdate

TREE = Path(__file__).resolve().parents[2]


def test_one_version_everywhere() -> None:
    """The Python package, the module (MODULE_VERSION) and the Debian packages agree."""
    kernel = re.search(r'#define LU_MODULE_VERSION "([^"]+)"', (TREE / "kernel/lu_internal.h").read_text())
    changelog = re.match(r"liveupdate \(([^)]+)\)", (TREE / "debian/changelog").read_text())
    assert kernel and changelog
    assert kernel.group(1) == changelog.group(1) == liveupdate.__version__


def test_dkms_skips_kernels_the_build_refuses() -> None:
    """DKMS's BUILD_EXCLUSIVE_CONFIG asks for what kernel/Makefile's check-kernel asks."""
    dkms = (TREE / "debian/liveupdate-dkms.dkms").read_text()
    wanted = re.search(r'^BUILD_EXCLUSIVE_CONFIG="([^"]+)"', dkms, re.MULTILINE)
    assert wanted
    makefile = (TREE / "kernel/Makefile").read_text()
    checked = set(re.findall(r"\$\(call has,(\w+)\)", makefile))
    assert {w.lstrip("!").removeprefix("CONFIG_") for w in wanted.group(1).split()} == checked
    assert "!CONFIG_LIVEUPDATE" in wanted.group(1).split()


@pytest.mark.parametrize(("config", "refusal"), [
    ("CONFIG_KEXEC_FILE=y\n", "lacks CONFIG_KEXEC_HANDOVER=y"),
    ("CONFIG_KEXEC_HANDOVER=y\nCONFIG_KEXEC_FILE=y\nCONFIG_LIVEUPDATE=y\n", "mainline's LUO built in"),
    (None, "not a configured kernel build tree"),
])
def test_build_refuses_a_kernel_it_cannot_serve(tmp_path: Path, config: str | None, refusal: str) -> None:
    if config is not None:
        (tmp_path / "include/config").mkdir(parents=True)
        (tmp_path / "include/config/auto.conf").write_text(config)
    done = subprocess.run(["make", "-s", "-C", str(TREE / "kernel"), f"KDIR={tmp_path}"],
                          capture_output=True, text=True)
    assert done.returncode != 0
    said = [line for line in done.stderr.splitlines() if line.startswith("liveupdate:")]
    assert len(said) == 1 and refusal in said[0], done.stderr


@pytest.mark.parametrize("cmdline", ["quiet kho=on", "kho=1 ro", "kho=yes", "root=/dev/vda kho=y"])
def test_initramfs_script_loads_the_module_when_kho_is_on(tmp_path: Path, cmdline: str) -> None:
    assert initramfs_script_loads(tmp_path, cmdline)


@pytest.mark.parametrize("cmdline", ["quiet", "kho=off", "kho=0", "nokho=on", "kho=onion"])
def test_initramfs_script_leaves_the_module_alone_otherwise(tmp_path: Path, cmdline: str) -> None:
    assert not initramfs_script_loads(tmp_path, cmdline)


def initramfs_script_loads(tmp_path: Path, cmdline: str) -> bool:
    """Run the init-top script with /proc/cmdline and modprobe stood in for."""
    script = (TREE / "boot/initramfs-tools/scripts/init-top/liveupdate").read_text()
    (tmp_path / "cmdline").write_text(cmdline + "\n")
    (tmp_path / "modprobe").write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path}/loaded\n")
    (tmp_path / "modprobe").chmod(0o755)
    (tmp_path / "script").write_text(script.replace("/proc/cmdline", str(tmp_path / "cmdline")))
    subprocess.run(["sh", str(tmp_path / "script")], check=True,
                   env={"PATH": f"{tmp_path}:/usr/bin:/bin"})
    loaded = tmp_path / "loaded"
    return loaded.exists() and loaded.read_text() == "liveupdate\n"
