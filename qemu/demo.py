"""The demo's two stages: preserve a memfd in one kernel, find it in the next.

Run by `make demo` through qemu/demo.plan; LU_STAGE says which kernel this is.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path

from liveupdate import Device, hold_fds_until_kexec

SESSION = "demo"
TOKEN = 1
SIZE = 64 << 20
STATE = Path(os.environ.get("LU_OUT", "/tmp")) / "demo.json"


def stage1() -> None:
    message = f"written by kernel {platform.release()} at {time.strftime('%H:%M:%S')}".encode()
    data = message.ljust(4096, b"\0") + os.urandom(SIZE - 4096)
    fd = os.memfd_create("demo-vm-memory")
    os.write(fd, data)
    digest = hashlib.sha256(data).hexdigest()
    with Device() as dev:
        session = dev.create_session(SESSION)
        session.preserve(fd, TOKEN)
    STATE.write_text(json.dumps({"sha256": digest, "message": message.decode()}))
    print(f"demo: preserved a {SIZE >> 20} MiB memfd in session {SESSION!r}: {message.decode()!r}")
    print(f"demo: sha256 {digest}; kexec next")
    hold_fds_until_kexec()


def stage2() -> int:
    expected = json.loads(STATE.read_text())
    start = time.monotonic()
    with Device() as dev, dev.retrieve_session(SESSION) as session:
        fd = session.retrieve(TOKEN)
        took = time.monotonic() - start
        data = os.pread(fd, SIZE, 0)
        session.finish()
    digest = hashlib.sha256(data).hexdigest()
    print(f"demo: after kexec, retrieved the memfd in {took:.2f} s: {data[:4096].rstrip(bytes(1)).decode()!r}")
    print(f"demo: sha256 {digest} ({'matches' if digest == expected['sha256'] else 'DIFFERS'})")
    return 0 if digest == expected["sha256"] else 1


if __name__ == "__main__":
    if os.environ.get("LU_STAGE") == "1":
        stage1()
        sys.exit(0)
    sys.exit(stage2())
