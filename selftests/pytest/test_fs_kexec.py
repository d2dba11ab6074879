"""A liveupdatefs instance across a real kexec.

Kernel 1 mounts instance ``fs-tree``, fills it with a tree of every kind
of entry (directories, stamped files with holes, a hard link, a symlink,
a fifo, a device node, an empty file), with their own modes, owners and
times, records where each page of the files lives (pagemap), and lets the
reboot notifier carry it. Kernel 2 mounts the instance again: the whole
tree must come back, every page stamped as before, holes still holes,
and every page at the physical address it had (zero copy).
"""

from __future__ import annotations

import json
import mmap
import os
import stat
import struct
import subprocess
from pathlib import Path

import pytest
import stamps
from conftest import Carry, cli

from liveupdate import Device, State

PAGE = stamps.PAGE
MNT = Path("/tmp/lufs")
SESSION = "fs-tree"
carry = Carry("fs_kexec")

# name -> (file id, size, stamped page ranges as (first, count))
FILES = {
    "a/data": (1, 64 * PAGE, [(0, 8), (20, 4), (63, 1)]),
    "a/b/big": (2, 1024 * PAGE, [(0, 1024)]),
    "empty": (3, 0, []),
}
DIRS = {"a": 0o750, "a/b": 0o700}
MODES = {"a/data": 0o640, "a/b/big": 0o600, "empty": 0o444}
OWNERS = {"a": (1000, 1000), "a/data": (1000, 100), "a/b/big": (0, 1000)}
TIMES = {"a/data": (1_000_000_000, 1_100_000_000), "a/b": (1_200_000_000, 1_300_000_000)}


def mount(*options: str) -> subprocess.CompletedProcess[str]:
    opts = ",".join(options)
    return subprocess.run(["mount", "-t", "liveupdatefs", "-o", opts, "none", str(MNT)],
                          capture_output=True, text=True)


def umount() -> None:
    subprocess.run(["umount", str(MNT)], check=True)


def pfns(path: Path, size: int) -> list[int]:
    """The frame number of each page of ``path`` (0: a hole), through a
    shared mapping of it and /proc/self/pagemap."""
    if not size:
        return []
    fd = os.open(path, os.O_RDONLY)
    try:
        with mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ) as m:
            data_pages = set()
            offset = 0
            while True:
                try:
                    offset = os.lseek(fd, offset, os.SEEK_DATA)
                except OSError:
                    break
                end = os.lseek(fd, offset, os.SEEK_HOLE)
                data_pages.update(range(offset // PAGE, end // PAGE))
                offset = end
            for index in data_pages:
                m[index * PAGE]  # fault the page in
            start = mapping_start(str(path))
            with open("/proc/self/pagemap", "rb") as pagemap:
                pagemap.seek(start // PAGE * 8)
                entries = struct.unpack(f"<{size // PAGE}Q", pagemap.read(size // PAGE * 8))
    finally:
        os.close(fd)
    return [e & ((1 << 55) - 1) if e >> 63 and i in data_pages else 0 for i, e in enumerate(entries)]


def mapping_start(path: str) -> int:
    for line in Path("/proc/self/maps").read_text().splitlines():
        if line.endswith(" " + path):
            return int(line.split("-")[0], 16)
    raise AssertionError(f"{path} is not mapped")


def tree() -> dict[str, tuple[int, int, int, int]]:
    """Every entry: (mode, uid, gid, mtime) by path."""
    out = {}
    for root, dirs, files in os.walk(MNT):
        for name in dirs + files:
            path = Path(root, name)
            st = path.lstat()
            out[str(path.relative_to(MNT))] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns)
    return out


@pytest.mark.stage(1)
def test_kernel1_fill_instance() -> None:
    MNT.mkdir(exist_ok=True)
    assert mount(f"session={SESSION}", "size=64m", "mode=0755").returncode == 0
    for path, mode in DIRS.items():
        (MNT / path).mkdir(mode)
        (MNT / path).chmod(mode)
    for path, (file_id, size, ranges) in FILES.items():
        fd = os.open(MNT / path, os.O_CREAT | os.O_RDWR, 0o600)
        os.ftruncate(fd, size)
        for first, count in ranges:
            stamps.write(fd, file_id, first * PAGE, count * PAGE)
        os.close(fd)
    for path, mode in MODES.items():
        (MNT / path).chmod(mode)
    os.link(MNT / "a/data", MNT / "a/b/link")
    os.symlink("a/data", MNT / "sym")
    os.mkfifo(MNT / "fifo", 0o620)
    os.mknod(MNT / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    for path, (uid, gid) in OWNERS.items():
        os.chown(MNT / path, uid, gid)
    for path, (atime, mtime) in TIMES.items():
        os.utime(MNT / path, ns=(atime * 1000, mtime * 1000))
    frames = {path: pfns(MNT / path, size) for path, (_, size, _) in FILES.items()}
    # A second mount shares the instance; its options are fixed.
    other = Path("/tmp/lufs2")
    other.mkdir(exist_ok=True)
    r = subprocess.run(["mount", "-t", "liveupdatefs", "-o", f"session={SESSION}", "none", str(other)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (other / "a/b/big").stat().st_ino == (MNT / "a/b/big").stat().st_ino
    subprocess.run(["umount", str(other)], check=True)
    assert mount(f"session={SESSION}", "size=1m").returncode != 0
    assert (MNT / "a/data").exists()
    carry.save({"tree": tree(), "frames": frames})


HELD, CANCELLED = "fs-held", "fs-cancelled"
HELD_MNT, CANCELLED_MNT = Path("/tmp/lufs-held"), Path("/tmp/lufs-cancelled")


def mount_at(where: Path, session: str) -> None:
    where.mkdir(exist_ok=True)
    r = subprocess.run(["mount", "-t", "liveupdatefs", "-o", f"session={session}", "none", str(where)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.stage(1)
def test_kernel1_events() -> None:
    """PREPARE pins every instance; CANCEL lets an unmounted one go; what
    changes after PREPARE is carried as the DOC in lu_fs.c says."""
    mount_at(CANCELLED_MNT, CANCELLED)
    (CANCELLED_MNT / "f").write_bytes(b"c" * 100)
    mount_at(HELD_MNT, HELD)
    fd = os.open(HELD_MNT / "f", os.O_CREAT | os.O_RDWR, 0o600)
    stamps.write(fd, 10, 0, 16 * PAGE)
    (HELD_MNT / "g").write_bytes(b"g" * 3000)
    with Device() as dev:
        before = dev.get_state()
        dev.prepare()
        prepared = dev.get_state()
        # Each instance: its tree and its regular files (a hard link once).
        assert prepared.files - before.files == (1 + 3) + (1 + 1) + (1 + 2)
        subprocess.run(["umount", str(CANCELLED_MNT)], check=True)
        assert (CANCELLED_MNT / "f").exists() is False
        dev.cancel()
        # Unmounted and cancelled: discarded with its session.
        assert dev.get_state().sessions == before.sessions - 1
        dev.prepare()
        # After PREPARE: written pages are carried, a new file is not, the
        # size is fixed.
        stamps.write(fd, 10, 0, PAGE, generation=2)
        (HELD_MNT / "late").write_bytes(b"late")
        with pytest.raises(PermissionError):
            os.ftruncate(fd, 32 * PAGE)
        os.close(fd)
        (HELD_MNT / "g").rename(HELD_MNT / "g2")
        # Unmounted while prepared: pinned, still carried.
        subprocess.run(["umount", str(HELD_MNT)], check=True)
        dev.freeze()
        assert dev.get_state().state == State.FROZEN


@pytest.mark.stage(2)
def test_kernel2_events_carried() -> None:
    HELD_MNT.mkdir(exist_ok=True)
    r = cli("--json", "fs", "mount", HELD, str(HELD_MNT))
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["session"] == HELD
    listed = json.loads(cli("--json", "fs", "list").stdout)["instances"]
    assert [(i["session"], i["mountpoint"]) for i in listed] == [(HELD, str(HELD_MNT))]
    assert listed[0]["used_bytes"] >= 16 * PAGE
    assert sorted(p.name for p in HELD_MNT.iterdir()) == ["f", "g2"]
    fd = os.open(HELD_MNT / "f", os.O_RDONLY)
    stamps.verify(fd, 10, 0, 16 * PAGE, generation={0: 2})
    os.close(fd)
    assert (HELD_MNT / "g2").read_bytes() == b"g" * 3000
    subprocess.run(["umount", str(HELD_MNT)], check=True)
    mount_at(CANCELLED_MNT, CANCELLED)
    assert not any(CANCELLED_MNT.iterdir())
    subprocess.run(["umount", str(CANCELLED_MNT)], check=True)


@pytest.mark.stage(2)
def test_kernel2_tree_back() -> None:
    before = carry.load()
    MNT.mkdir(exist_ok=True)
    r = mount(f"session={SESSION}")
    assert r.returncode == 0, r.stderr
    now = tree()
    assert now == {path: tuple(v) for path, v in before["tree"].items()}
    for path, (file_id, size, ranges) in FILES.items():
        fd = os.open(MNT / path, os.O_RDONLY)
        assert os.fstat(fd).st_size == size
        for first, count in ranges:
            stamps.verify(fd, file_id, first * PAGE, count * PAGE)
        os.close(fd)
        assert pfns(MNT / path, size) == before["frames"][path], f"{path}: pages moved or were copied"
    assert (MNT / "a/b/link").stat().st_ino == (MNT / "a/data").stat().st_ino
    assert os.readlink(MNT / "sym") == "a/data"
    assert stat.S_ISFIFO((MNT / "fifo").lstat().st_mode)
    assert (MNT / "null").lstat().st_rdev == os.makedev(1, 3)
    # An ordinary tmpfs from now on: it takes new files and writes.
    (MNT / "new").write_bytes(b"x" * 5000)
    assert (MNT / "new").read_bytes() == b"x" * 5000
    # The last unmount discards it, as closing a session fd would.
    umount()
    assert mount(f"session={SESSION}").returncode == 0
    assert not any(MNT.iterdir())
    umount()
