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
from pathlib import Path

from liveupdate import Device, daemon
from liveupdate.device import Session

# The tests' stamped pages (file, page index, generation, CRC32 in every page).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "pytest"))
import stamps

SIZE = 256 * stamps.PAGE
FILE_IDS = {"memfd": 1, "session": 2}
SESSION = "lu-test-service"
TOKEN = 7


def stamped_memfd(mode: str) -> int:
    fd = os.memfd_create(f"lu-test-{mode}")
    stamps.write(fd, FILE_IDS[mode], 0, SIZE)
    return fd


def store(mode: str) -> dict[str, object]:
    data = stamped_memfd(mode)
    if mode == "memfd":
        daemon.store_fd("data", data)
        return {"stored": "memfd"}
    with Device() as dev:  # /dev/liveupdate is closed again at once: others need it
        session = dev.create_session(SESSION)
    session.preserve(data, TOKEN)
    daemon.store_fd("session", session.fileno())
    return {"stored": "session", "name": SESSION}


def check(mode: str, passed: dict[str, list[int]]) -> dict[str, object]:
    if mode == "memfd":
        (fd,) = passed["data"]
        return {"checked": "memfd", "size": os.fstat(fd).st_size, "damage": stamps.damage(fd, FILE_IDS[mode], 0, SIZE)}
    (fd,) = passed["session"]
    session = Session(fd, SESSION, incoming=True)
    data = session.retrieve(TOKEN)
    result = {"checked": "session", "name": session.get_name(), "size": os.fstat(data).st_size,
              "damage": stamps.damage(data, FILE_IDS[mode], 0, SIZE)}
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
