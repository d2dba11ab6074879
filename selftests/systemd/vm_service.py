"""A VM-like service of the systemd guest: its guest memory lives in a memfd
that it hands to liveupdated (the agent from python3-liveupdate) and takes
back from it after the kexec, as a hypervisor would.

Run by lu-test-vm.service. At a start where the agent has nothing for it
(no session "vm-1" from the previous kernel), it writes stamped pages and
hands the memfd to the agent; else it takes the memfd back and checks
every page. What it did goes to /run/out/vm.json and the console.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import sys
from pathlib import Path

import liveupdate
from liveupdate import LiveUpdateError, daemon

# The tests' stamped pages (file, page index, generation, CRC32 in every page).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "pytest"))
import stamps

SESSION, TOKEN = "vm-1", 1
FILE_ID, SIZE = 3, 1024 * stamps.PAGE


def main() -> int:
    with liveupdate.connect() as agent:
        try:
            fd = agent.retrieve(SESSION, TOKEN)
        except LiveUpdateError as e:
            if e.errno != errno.ENOENT:
                raise
            fd = os.memfd_create("guest-ram")
            stamps.write(fd, FILE_ID, 0, SIZE)
            agent.preserve(SESSION, fd, token=TOKEN)
            result: dict[str, object] = {"handed": SESSION, "size": SIZE}
        else:
            result = {"took_back": SESSION, "size": os.fstat(fd).st_size,
                      "damage": stamps.damage(fd, FILE_ID, 0, SIZE)}
    with open("/run/out/vm.json", "w") as out:
        json.dump(result, out)
    print(f"LU-SERVICE vm: {json.dumps(result)}", flush=True)
    daemon.notify("READY=1")
    signal.pause()  # "runs the guest" from the memfd it holds
    return 0


if __name__ == "__main__":
    sys.exit(main())
