"""The ``liveupdate`` CLI against the real module, and a kexec that it drives.

Kernel 1 runs every device command in text and ``--json`` with their exit
codes, watches uevents, checks that ``liveupdate kexec`` refuses and undoes
what it did when a step fails, and leaves a session held; the plan then
runs ``python -m liveupdate kexec`` into kernel 2. Kernel 2 checks the
steps it reported, the UPDATED status, the data, and ``finish``.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import NEXT_KERNEL, PATIENCE, cli, cli_process, install_next_kernel

from liveupdate import Device, hold_fds_until_kexec
from liveupdate.watch import Watcher

MIB = 1 << 20
PARAMS = Path("/sys/module/liveupdate/parameters")
KEXEC_LOG = Path(os.environ.get("LU_OUT", "/tmp")) / "cli_kexec.json"


def cli_json(*args: str) -> dict:
    done = cli(*args, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def memfd_with(data: bytes) -> int:
    fd = os.memfd_create("cli")
    os.write(fd, data)
    return fd


@pytest.mark.stage(1)
def test_kernel1_status() -> None:
    status = cli_json("status")
    assert status["state"] == "normal"
    assert (status["module_loaded"], status["kho_enabled"], status["kho_boot"]) == (True, True, False)
    assert status["format_version"] >= 2
    assert status["device"] == "available"
    done = cli_process("status")  # the entry point, in a process of its own
    assert done.returncode == 0
    assert "state: normal" in done.stdout and "KHO: on, KHO boot: no" in done.stdout

    # While another process holds the device, status still tells the state.
    with Device():
        status = cli_json("status")
    assert (status["state"], status["device"]) == ("normal", "busy")


@pytest.mark.stage(1)
def test_kernel1_events_and_exit_codes() -> None:
    assert cli_json("prepare") == {"event": "prepare", "state": "prepared", "released_sessions": 0,
                                   "released_files": 0, "released_bytes": 0}
    done = cli("prepare")
    assert done.returncode == 1
    assert "prepare: Device or resource busy" in done.stderr and "cancel or finish first" in done.stderr
    done = cli("freeze")
    assert (done.returncode, done.stdout.strip()) == (0, "freeze: state is now frozen")
    assert cli_json("cancel")["state"] == "normal"
    done = cli("cancel", "--json")
    assert done.returncode == 1
    assert json.loads(done.stdout)["errno"] == 16
    done = cli("finish")
    assert done.returncode == 1 and "UPDATED" in done.stderr
    assert cli_process("freeze", "--bogus").returncode == 2


@pytest.mark.stage(1)
def test_kernel1_watch() -> None:
    watcher = subprocess.Popen([sys.executable, "-m", "liveupdate", "watch", "--json", "--count", "2",
                                "--timeout", str(PATIENCE)], stdout=subprocess.PIPE, text=True)
    # The watcher subscribes at some point: cycle until it has seen two changes.
    deadline = time.monotonic() + PATIENCE
    while watcher.poll() is None and time.monotonic() < deadline:
        with Device() as dev:
            dev.prepare()
            dev.cancel()
        time.sleep(0.3)
    out, _ = watcher.communicate(timeout=PATIENCE)
    assert watcher.returncode == 0
    changes = [json.loads(line) for line in out.splitlines()]
    assert len(changes) == 2
    for change in changes:
        assert (change["event"], change["state"]) in (("prepare", "prepared"), ("cancel", "normal"))
        assert change["devpath"].endswith("/liveupdate")
    assert cli("watch", "--count", "1", "--timeout", "1").returncode == 1

    # A burst: every change is seen, in order (before: 7 sent, 4 seen).
    with Watcher() as watching, Device() as dev:
        for _ in range(4):
            dev.prepare()
            dev.cancel()
        seen = [(c.event, c.state) for c in itertools.islice(watching.changes(timeout=5), 8)]
    assert seen == [("prepare", "prepared"), ("cancel", "normal")] * 4


@pytest.mark.stage(1)
def test_kernel1_kexec_refuses_a_kernel_that_cannot_take_over() -> None:
    """No config of the next kernel in /boot, no liveupdate.ko for it under
    /lib/modules: refused, naming both, before anything is loaded or
    prepared. The kexecs below find both where install_next_kernel() puts
    them, laid out as Debian and DKMS do."""
    kernel, initrd = os.environ["LU_KERNEL"], os.environ["LU_INITRD"]
    done = cli("kexec", kernel, "--initrd", initrd, "--append", "quiet")
    assert done.returncode == 1, done.stderr
    assert "no config of 7." in done.stderr and "no liveupdate.ko for 7." in done.stderr, done.stderr
    assert "--force" in done.stderr
    assert Path("/sys/kernel/kexec_loaded").read_text().strip() == "0"
    assert cli_json("status")["state"] == "normal"


@pytest.mark.stage(1)
def test_kernel1_kexec_refuses_and_undoes() -> None:
    kernel, initrd = os.environ["LU_KERNEL"], os.environ["LU_INITRD"]
    done = cli("kexec", "/nonexistent/bzImage", "--append", "quiet")
    assert done.returncode == 1 and "cannot read /nonexistent/bzImage" in done.stderr

    # FREEZE fails: the CLI cancels PREPARE and unloads the kernel.
    fd = memfd_with(b"x" * MIB)
    with Device() as dev, dev.create_session("cli-fail") as session:
        session.preserve(fd, 77)
        dev.close()
        (PARAMS / "test_fail_freeze").write_text("77")
        try:
            done = cli("kexec", kernel, "--initrd", initrd, "--append", "quiet", "--json",
                       *install_next_kernel())
        finally:
            (PARAMS / "test_fail_freeze").write_text("0")
    os.close(fd)
    assert done.returncode == 1
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line.get("step") for line in lines[:-1]] == ["checked", "loaded", "prepared", "cancelled", "unloaded"]
    release = lines[0]["release"]
    assert lines[0] == {"step": "checked", "release": release, "config": f"{NEXT_KERNEL}/boot/config-{release}",
                        "module": f"{NEXT_KERNEL}/modules/{release}/updates/dkms/liveupdate.ko", "problems": [],
                        "forced": False}
    assert "freeze (session 'cli-fail', token 77)" in lines[-1]["error"]
    assert Path("/sys/kernel/kexec_loaded").read_text().strip() == "0"
    assert cli_json("status")["state"] == "normal"


@pytest.mark.stage(1)
def test_kernel1_leave_a_session_for_the_cli_kexec() -> None:
    fd = memfd_with(b"carried by liveupdate kexec " * 1000)
    with Device() as dev:
        session = dev.create_session("cli")
        session.preserve(fd, 1)
    hold_fds_until_kexec()


@pytest.mark.stage(2)
def test_kernel2_after_the_cli_kexec() -> None:
    steps = [json.loads(line) for line in KEXEC_LOG.read_text().splitlines()]
    assert [step["step"] for step in steps] == ["checked", "loaded", "prepared", "frozen", "kexec"]
    assert steps[2]["sessions"] == 1 and steps[2]["bytes"] > 0

    status = cli_json("status")
    assert (status["state"], status["kho_boot"], status["incoming_sessions"]) == ("updated", True, 1)
    with Device() as dev, dev.retrieve_session("cli") as session:
        fd = session.retrieve(1)
        assert os.pread(fd, 28, 0) == b"carried by liveupdate kexec "
        os.close(fd)
        dev.close()
        finish = cli_json("finish")
    assert (finish["state"], finish["released_sessions"], finish["released_files"]) == ("normal", 0, 0)
