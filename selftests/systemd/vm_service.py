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

import liveupdate
from liveupdate import LiveUpdateError, daemon

SESSION, TOKEN = "vm-1", 1
PAGES, PAGE = 1024, 4096


def page(index: int) -> bytes:
    head = f"guest memory page {index} of {PAGES}\n".encode()
    return (head * (PAGE // len(head) + 1))[:PAGE]


def main() -> int:
    with liveupdate.connect() as agent:
        try:
            fd = agent.retrieve(SESSION, TOKEN)
        except LiveUpdateError as e:
            if e.errno != errno.ENOENT:
                raise
            fd = os.memfd_create("guest-ram")
            os.write(fd, b"".join(page(i) for i in range(PAGES)))
            agent.preserve(SESSION, fd, token=TOKEN)
            result: dict[str, object] = {"handed": SESSION, "size": PAGES * PAGE}
        else:
            bad = [i for i in range(PAGES) if os.pread(fd, PAGE, i * PAGE) != page(i)]
            result = {"took_back": SESSION, "size": os.fstat(fd).st_size, "bad_pages": bad}
    with open("/run/out/vm.json", "w") as out:
        json.dump(result, out)
    print(f"LU-SERVICE vm: {json.dumps(result)}", flush=True)
    daemon.notify("READY=1")
    signal.pause()  # "runs the guest" from the memfd it holds
    return 0


if __name__ == "__main__":
    sys.exit(main())
