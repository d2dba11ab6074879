"""systemd's protocols as the agent speaks them: socket activation and sd_notify."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from liveupdate import daemon

PACKAGE = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("abstract", [False, True])
def test_notify_reaches_the_manager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, abstract: bool) -> None:
    name = f"@lu-notify-{os.getpid()}" if abstract else str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind("\0" + name[1:] if abstract else name)
        monkeypatch.setenv("NOTIFY_SOCKET", name)
        assert daemon.notify("READY=1\nSTATUS=serving")
        assert manager.recv(4096) == b"READY=1\nSTATUS=serving"
        r, w = os.pipe()
        assert daemon.notify("FDSTORE=1\nFDNAME=registry", [r])
        msg, fds, _, _ = socket.recv_fds(manager, 4096, 4)
        assert msg == b"FDSTORE=1\nFDNAME=registry" and len(fds) == 1
        os.write(w, b"x")
        assert os.read(fds[0], 1) == b"x"
        for fd in (r, w, *fds):
            os.close(fd)


def test_without_a_manager(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert daemon.notify("READY=1") is False
    assert daemon.watchdog_interval() is None
    monkeypatch.setenv("LISTEN_PID", "1")  # another process's
    monkeypatch.setenv("LISTEN_FDS", "1")
    assert daemon.listen_fds() == {}


def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert daemon.watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert daemon.watchdog_interval() is None


def test_socket_activation(tmp_path: Path) -> None:
    """A listening socket as fd 3 with LISTEN_PID of the process itself, as systemd passes it."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(str(tmp_path / "sock"))
    listener.listen(1)
    code = ("import json, os; from liveupdate import cli, daemon; p = daemon.listen_fds();"
            " s = cli.activated_listener(p); print(json.dumps([s.fileno(), s.getsockname(), os.get_inheritable(3),"
            " sorted(k for k in os.environ if k.startswith('LISTEN_')), p]))")
    # What systemd does between fork and exec: the fd at 3, LISTEN_PID the process's own.
    wrapper = (f"import os, sys; os.dup2({listener.fileno()}, 3); os.environ |= {{'LISTEN_PID': str(os.getpid()),"
               f" 'LISTEN_FDS': '1', 'LISTEN_FDNAMES': 'agent.sock'}}; os.execv(sys.executable, [sys.executable,"
               f" '-c', {code!r}])")
    done = subprocess.run([sys.executable, "-c", wrapper], pass_fds=(listener.fileno(),), capture_output=True,
                          text=True, env=os.environ | {"PYTHONPATH": str(PACKAGE)})
    listener.close()
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [3, str(tmp_path / "sock"), False, [], {}]
