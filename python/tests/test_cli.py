"""The CLI where no kernel is needed: usage, the console script, a missing module."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from liveupdate import system
from liveupdate.cli import main

PACKAGE = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("argv", [[], ["bogus"], ["status", "--bogus"], ["kexec"], ["watch", "--count", "x"]])
def test_usage_errors_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2


@pytest.mark.parametrize(
    ("cmdline", "on"),
    [("ro kho=on quiet", True), ("kho=1", True), ("kho=off", False), ("kho=on kho=off", False), ("quiet", False)],
)
def test_kho_enabled_reads_the_boot_parameter(cmdline: str, on: bool) -> None:
    assert system.kho_enabled(cmdline) is on


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package installed as a user would, with its console script."""
    target = tmp_path_factory.mktemp("site")
    # Built from a copy: setuptools writes build/ and *.egg-info next to the sources.
    source = tmp_path_factory.mktemp("src") / "python"
    shutil.copytree(PACKAGE, source, ignore=shutil.ignore_patterns("tests", "__pycache__", "build", "*.egg-info"))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target),
         str(source)],
        check=True,
    )
    return target


def run_script(installed: Path, *args: str) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONPATH": str(installed)}
    return subprocess.run([str(installed / "bin" / "liveupdate"), *args], capture_output=True, text=True, env=env)


def test_console_script_runs(installed: Path) -> None:
    done = run_script(installed, "--help")
    assert done.returncode == 0
    for command in ("status", "prepare", "freeze", "cancel", "finish", "watch", "kexec"):
        assert command in done.stdout


@pytest.mark.skipif(system.module_loaded(), reason="needs a machine without liveupdate.ko")
def test_without_the_module(installed: Path) -> None:
    done = run_script(installed, "status", "--json")
    assert done.returncode == 0
    status = json.loads(done.stdout)
    assert status["module_loaded"] is False
    assert status["device"] == "absent"

    done = run_script(installed, "prepare", "--json")
    assert done.returncode == 1
    error = json.loads(done.stdout)
    assert error["errno"] == 2
    assert "insmod liveupdate.ko" in error["error"]

    done = run_script(installed, "prepare")
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith("liveupdate: open /dev/liveupdate")


def test_agent_refuses_a_bad_policy_at_start(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("sessions:\n  - name: vm\n    uid: root\n")
    assert main(["agent", "--policy", str(policy), "--socket", str(tmp_path / "sock")]) == 1
    assert f"{policy}:3: sessions[0].uid: expected an id" in capsys.readouterr().err
    assert not (tmp_path / "sock").exists()


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    import liveupdate

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"liveupdate {liveupdate.__version__}"


@pytest.mark.skipif(system.module_loaded(), reason="needs a machine without liveupdate.ko")
@pytest.mark.parametrize("argv", [["--json", "status"], ["status", "--json"], ["--json", "status", "--json"]])
def test_json_before_or_after_the_command(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["device"] == "absent"


def test_exec_of_a_missing_command_takes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Refused before the agent is even asked (its socket does not exist here)."""
    argv = ["session", "retrieve", "vm", "1", "--socket", str(tmp_path / "none"), "--exec", "no-such-qemu", "-x"]
    assert main(argv) == 127
    assert "cannot run 'no-such-qemu': no such command" in capsys.readouterr().err


def has_socket(pid: int) -> bool:
    """Whether process ``pid`` has a socket open (its fds come and go meanwhile)."""
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            if os.readlink(fd).startswith("socket:"):
                return True
    return False


def test_ctrl_c_exits_130(installed: Path) -> None:
    """As a shell reports a command it interrupted."""
    env = os.environ | {"PYTHONPATH": str(installed)}
    # SIGINT as a terminal would have it, even when this test runs in a background
    # job (which ignores SIGINT, and Python then leaves it ignored).
    proc = subprocess.Popen([str(installed / "bin" / "liveupdate"), "watch"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        # Into the loop that waits for uevents: once its netlink socket is open.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not has_socket(proc.pid):
            time.sleep(0.05)
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted" in err


def test_liveupdated_entry_point(installed: Path) -> None:
    env = os.environ | {"PYTHONPATH": str(installed)}
    done = subprocess.run([str(installed / "bin" / "liveupdated"), "--help"], env=env, capture_output=True, text=True)
    assert done.returncode == 0 and "--policy" in done.stdout and "--socket-group" in done.stdout
