"""The client library over a real socket, where no kernel is needed."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from liveupdate import LiveUpdateError, protocol
from liveupdate.client import AgentClient


def test_oversized_request_is_a_liveupdate_error(tmp_path: Path) -> None:
    # Before: the ProtocolError from encoding escaped as a traceback in the CLI.
    path = str(tmp_path / "agent.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path)
    listener.listen(1)

    def hello_only() -> None:
        conn, _ = listener.accept()
        with conn:
            protocol.receive(conn)
            protocol.send(conn, {"ok": True, "version": protocol.VERSION})
            conn.recv(1)  # until the client closes

    server = threading.Thread(target=hello_only)
    server.start()
    with AgentClient(path) as agent, pytest.raises(LiveUpdateError) as exc:
        agent.preserve("x" * protocol.MAX_MESSAGE, 0, token=1)
    assert exc.value.errno == errno.EMSGSIZE
    server.join()
    listener.close()


HOLDER = """
import os, signal, sys, time
from liveupdate.holder import hold_fds_until_kexec
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in any Python CLI
try:
    pid = hold_fds_until_kexec()
except KeyboardInterrupt:  # what a CLI's main() does with Ctrl-C
    pid = 0
with open(sys.argv[1], "a") as log:
    log.write(f"{os.getpid()}\\n")
if pid > 0:
    time.sleep(0.5)
    os.kill(pid, signal.SIGINT)
    time.sleep(0.5)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
"""


def test_holder_never_runs_the_callers_code(tmp_path: Path) -> None:
    # Before: SIGINT in the holder raised KeyboardInterrupt into the caller's code,
    # which then ran on in two processes.
    log = tmp_path / "log"
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    subprocess.run([sys.executable, "-c", HOLDER, str(log)], check=True, env=env, timeout=60)
    assert len(log.read_text().splitlines()) == 1
