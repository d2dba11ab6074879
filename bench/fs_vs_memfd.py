"""1 GiB in a liveupdatefs instance file against 1 GiB in a memfd, one kexec.

Run in the guest by ``bench/fs_vs_memfd.plan`` (lean kernel: see the
Makefile's bench-fs). Kernel 1 times, REPEATS times each, the memfd's
PRESERVE_FD + PREPARE and the instance's PREPARE (which preserves its
files itself), each alone and cancelled; then both go across the kexec.
Kernel 2 times the memfd's RETRIEVE_SESSION + RETRIEVE_FD and the
instance's first mount (which restores its tree and files), then reads
both once. Prints one "LU-FSBENCH {json}" line per stage.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from liveupdate import Device, hold_fds_until_kexec

SIZE = 1 << 30
CHUNK = 1 << 20
REPEATS = 3
SESSION, INSTANCE = "bench-memfd", "bench-fs"
MNT = Path("/tmp/bench-fs")


def fill(fd: int) -> None:
    chunk = bytes(range(256)) * (CHUNK // 256)
    for offset in range(0, SIZE, CHUNK):
        os.pwrite(fd, chunk, offset)


def read_all(fd: int) -> int:
    total = 0
    while data := os.pread(fd, CHUNK * 16, total):
        total += len(data)
    return total


def mount() -> float:
    MNT.mkdir(exist_ok=True)
    start = time.monotonic()
    subprocess.run(["mount", "-t", "liveupdatefs", "-o", f"session={INSTANCE},size=2g", INSTANCE, str(MNT)],
                   check=True)
    return time.monotonic() - start


def report(stage: int, data: dict[str, object]) -> None:
    print("LU-FSBENCH " + json.dumps({"stage": stage, **data}), flush=True)


def kernel1() -> None:
    memfd = os.memfd_create("bench")
    fill(memfd)
    dev = Device()
    memfd_times, fs_times = [], []
    for _ in range(REPEATS):
        start = time.monotonic()
        session = dev.create_session(SESSION)
        session.preserve(memfd, 1)
        dev.prepare()
        memfd_times.append(time.monotonic() - start)
        dev.cancel()
        session.close()
    mount()
    fd = os.open(MNT / "ram", os.O_CREAT | os.O_RDWR, 0o600)
    fill(fd)
    os.close(fd)
    for _ in range(REPEATS):
        start = time.monotonic()
        dev.prepare()
        fs_times.append(time.monotonic() - start)
        dev.cancel()
    session = dev.create_session(SESSION)
    session.preserve(memfd, 1)
    report(1, {"memfd_preserve_prepare_s": memfd_times, "fs_prepare_s": fs_times})
    hold_fds_until_kexec()


def kernel2() -> None:
    with Device() as dev:
        start = time.monotonic()
        session = dev.retrieve_session(SESSION)
        memfd = session.retrieve(1)
        memfd_restore = time.monotonic() - start
        fs_restore = mount()
        fd = os.open(MNT / "ram", os.O_RDONLY)
        start = time.monotonic()
        sizes = read_all(memfd), read_all(fd)
        read_s = time.monotonic() - start
        session.finish()
    report(2, {"memfd_restore_s": memfd_restore, "fs_restore_s": fs_restore, "bytes_read": sizes,
               "read_both_s": read_s})
    if sizes != (SIZE, SIZE):
        raise SystemExit(f"read {sizes}, not {SIZE} each")


if __name__ == "__main__":
    {"1": kernel1, "2": kernel2}[os.environ["LU_STAGE"]]()
