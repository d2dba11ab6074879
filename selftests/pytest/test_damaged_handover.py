"""A damaged hand-over is refused with one log line; the module still works.

Kernels 1 to 3 each preserve a memfd and damage what the next kernel reads
(test_damage_handover: version, magic, table); kernels 2 to 4 check that
the damage was noticed, said once, and that nothing was taken over.
"""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest

from liveupdate import Device, LiveUpdateError, hold_fds_until_kexec

PARAM = Path("/sys/module/liveupdate/parameters/test_damage_handover")
SESSION = "damaged"
# What kernel N+1 must say about the damage kernel N did.
EXPECTED_LINE = {
    1: "hand-over format version {damaged} unsupported",
    2: "hand-over root has bad magic",
    3: "hand-over table rejected",
}


def damage_and_hold(kind: int) -> None:
    dev = Device()
    session = dev.create_session(SESSION)
    fd = os.memfd_create("victim")
    os.write(fd, b"x" * 8192)
    session.preserve(fd, 1)
    PARAM.write_text(str(kind))
    hold_fds_until_kexec()


def check_refused(previous: int) -> None:
    log = subprocess.run(["dmesg"], capture_output=True, text=True, check=True).stdout
    lines = [line for line in log.splitlines() if "liveupdate:" in line and "taint" not in line]
    assert len(lines) == 1, lines
    with Device() as dev:
        damaged = dev.get_state().format_version + 1
        assert EXPECTED_LINE[previous].format(damaged=damaged) in lines[0]
        with pytest.raises(LiveUpdateError) as exc:
            dev.retrieve_session(SESSION)
        assert exc.value.errno == errno.ENOENT
        dev.create_session("still-works").close()


@pytest.mark.stage(1)
def test_kernel1_damage_version() -> None:
    damage_and_hold(1)


@pytest.mark.stage(2)
def test_kernel2_refused_version_then_damage_magic() -> None:
    check_refused(1)
    damage_and_hold(2)


@pytest.mark.stage(3)
def test_kernel3_refused_magic_then_damage_table() -> None:
    check_refused(2)
    damage_and_hold(3)


@pytest.mark.stage(4)
def test_kernel4_refused_table() -> None:
    check_refused(3)
