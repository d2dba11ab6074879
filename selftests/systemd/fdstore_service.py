"""A service that keeps what it holds in systemd's fd store across a kexec.

Run by lu-test-memfd.service and lu-test-session.service (this directory)
in the systemd guest, with the python3-liveupdate the guest installed.
Started without fds, it stores them: a memfd of stamped pages ("memfd"),
or a LUO session of its own created on /dev/liveupdate, holding such a
memfd ("session"), which systemd carries as a session. Started with the
fds systemd passes back (LISTEN_FDS), it checks every page (and ends the
session's hand-over) and says what it found in /run/out/fdstore-MODE.json
and on the console. The fds stay in the store until the test cleans it.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import zlib

from liveupdate import Device, daemon
from liveupdate.device import Session

PAGES = 256
PAGE = 4096
SESSION = "lu-test-service"
TOKEN = 7


def page(mode: str, index: int) -> bytes:
    head = f"{mode} page {index} of {PAGES}\n".encode()
    return (head * (PAGE // len(head) + 1))[:PAGE]


def stamped_memfd(mode: str) -> int:
    fd = os.memfd_create(f"lu-test-{mode}")
    os.write(fd, b"".join(page(mode, i) for i in range(PAGES)))
    return fd


def bad_pages(mode: str, fd: int) -> list[int]:
    return [i for i in range(PAGES) if os.pread(fd, PAGE, i * PAGE) != page(mode, i)]


def store(mode: str) -> dict[str, object]:
    data = stamped_memfd(mode)
    if mode == "memfd":
        daemon.store_fd("data", data)
        return {"stored": "memfd", "crc": zlib.crc32(b"".join(page(mode, i) for i in range(PAGES)))}
    with Device() as dev:  # /dev/liveupdate is closed again at once: others need it
        session = dev.create_session(SESSION)
    session.preserve(data, TOKEN)
    daemon.store_fd("session", session.fileno())
    return {"stored": "session", "name": SESSION}


def check(mode: str, passed: dict[str, list[int]]) -> dict[str, object]:
    if mode == "memfd":
        (fd,) = passed["data"]
        return {"checked": "memfd", "size": os.fstat(fd).st_size, "bad_pages": bad_pages(mode, fd)}
    (fd,) = passed["session"]
    session = Session(fd, SESSION, incoming=True)
    data = session.retrieve(TOKEN)
    result = {"checked": "session", "name": session.get_name(), "size": os.fstat(data).st_size,
              "bad_pages": bad_pages(mode, data)}
    session.finish()
    return result


def main() -> int:
    mode = sys.argv[1]
    passed = daemon.listen_fds()
    result = check(mode, passed) if passed else store(mode)
    result["passed_names"] = sorted(passed)
    with open(f"/run/out/fdstore-{mode}.json", "w") as out:
        json.dump(result, out)
    # On the console too, where the test runner stamps it with its clock.
    print(f"LU-SERVICE {mode}: {json.dumps(result)}", flush=True)
    daemon.notify("READY=1")
    signal.pause()  # holds nothing itself: the fd store does
    return 0


if __name__ == "__main__":
    sys.exit(main())
