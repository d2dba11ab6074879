"""A liveupdatefs instance across a real kexec.

Kernel 1 mounts instance ``fs-tree``, fills it with a tree of every kind
of entry (directories, stamped files with holes, a hard link, a symlink,
a fifo, a device node, an empty file), with their own modes, owners and
times. QEMU keeps a guest's RAM in a file of another instance; a third
and fourth instance go through PREPARE, CANCEL and FREEZE, and once
frozen, kernel 1 records where each page of the files lives (pagemap).
Kernel 2 mounts the instance again: the whole tree must come back, every
page stamped as before, holes still holes, and every page at the physical
address it had when it was carried (zero copy); QEMU finds its guest's
RAM as it was, in the same pages.
"""

from __future__ import annotations

import errno
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

from liveupdate import Device, State, abi

PAGE = stamps.PAGE
MNT = Path("/tmp/lufs")
SESSION = "fs-tree"
carry = Carry("fs_kexec")
carry_frames = Carry("fs_kexec_frames")
carry_held = Carry("fs_kexec_held")

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


def mount_at(where: Path, session: str) -> None:
    where.mkdir(exist_ok=True)
    r = subprocess.run(["mount", "-t", "liveupdatefs", "-o", f"session={session}", "none", str(where)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


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
    carry.save({"tree": tree()})


VM, VM_MNT = "fs-vm", Path("/tmp/lufs-vm")
BLOB_ADDR, BLOB_SIZE = 0x100000, 256 * 1024
BLOB = Path(os.environ.get("LU_OUT", "/tmp")) / "fs_kexec_blob"


def qemu(ram: Path, *args: str) -> bytes:
    """Start QEMU paused with ``ram`` as its guest memory (a shared file
    mapping), dump the blob's range of guest memory over the monitor, quit."""
    dump = Path("/tmp/fs_kexec_dump")
    dump.unlink(missing_ok=True)
    command = ["qemu-system-x86_64", "-machine", "q35,memory-backend=ram", "-m", "64M",
               "-object", f"memory-backend-file,id=ram,size=64M,mem-path={ram},share=on",
               "-S", "-display", "none", "-monitor", "stdio", "-serial", "none", "-nodefaults", *args]
    monitor = f'pmemsave {BLOB_ADDR:#x} {BLOB_SIZE} "{dump}"\nquit\n'
    r = subprocess.run(command, input=monitor, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return dump.read_bytes()


@pytest.mark.stage(1)
def test_kernel1_qemu_guest_ram() -> None:
    """QEMU keeps its guest's RAM in a file of an instance."""
    mount_at(VM_MNT, VM)
    BLOB.write_bytes(os.urandom(BLOB_SIZE))
    # The loader device writes the blob into guest RAM at reset, before any
    # guest instruction runs (-S).
    assert qemu(VM_MNT / "ram", "-device", f"loader,file={BLOB},addr={BLOB_ADDR:#x}") == BLOB.read_bytes()


def blob_frames() -> list[int]:
    return pfns(VM_MNT / "ram", 64 << 20)[BLOB_ADDR // PAGE:(BLOB_ADDR + BLOB_SIZE) // PAGE]


HELD, CANCELLED = "fs-held", "fs-cancelled"
HELD_MNT, CANCELLED_MNT = Path("/tmp/lufs-held"), Path("/tmp/lufs-cancelled")


CONTROL = Path("/tmp/lufs-control")


def control_mount() -> None:
    CONTROL.mkdir(exist_ok=True)
    if not os.path.ismount(CONTROL):
        subprocess.run(["mount", "-t", "liveupdatefs", "none", str(CONTROL)], check=True)


def session_info(direction: str, name: str) -> dict[str, str]:
    text = (CONTROL / "sessions" / direction / name).read_text()
    return dict(line.split(" ", 1) for line in text.splitlines())


@pytest.mark.stage(1)
def test_kernel1_control_instance() -> None:
    """A mount without session=: state, control and sessions/."""
    control_mount()
    assert (CONTROL / "state").read_text() == "normal\n"
    assert sorted(os.listdir(CONTROL)) == ["control", "sessions", "state"]
    assert sorted(os.listdir(CONTROL / "sessions/outgoing")) == [SESSION, VM]
    assert os.listdir(CONTROL / "sessions/incoming") == []
    assert session_info("outgoing", SESSION) == {"state": "open", "instance": "yes", "files": "0", "bytes": "0"}
    assert not (CONTROL / "sessions/outgoing/nosuch").exists()
    (CONTROL / "state").write_text("prepare\n")
    assert (CONTROL / "state").read_text() == "prepared\n"
    info = session_info("outgoing", SESSION)
    assert info["files"] == "4" and int(info["bytes"]) >= (8 + 4 + 1 + 1024) * PAGE
    with pytest.raises(OSError) as e:
        (CONTROL / "state").write_text("prepare")
    assert e.value.errno == errno.EBUSY
    with pytest.raises(OSError) as e:
        (CONTROL / "state").write_text("reboot")
    assert e.value.errno == errno.EINVAL
    r = cli("--json", "fs", "state", "cancel")
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout) == {"state": "normal", "control": str(CONTROL)}
    # control is /dev/liveupdate: its ioctls, and one opener at a time.
    with Device(str(CONTROL / "control")) as dev:
        assert dev.get_state().state == State.NORMAL
        with pytest.raises(OSError) as e:
            Device()
        assert e.value.errno == errno.EBUSY
    r = subprocess.run(["mount", "-t", "liveupdatefs", "-o", "size=1m", "none", "/mnt"], capture_output=True)
    assert r.returncode != 0


def fs_remove(session: str) -> tuple[int, int | None]:
    """``liveupdate fs remove``: its exit code and errno."""
    r = cli("--json", "fs", "remove", session)
    return r.returncode, json.loads(r.stdout).get("errno")


@pytest.mark.stage(1)
def test_kernel1_events() -> None:
    """PREPARE carries every instance, mounted or not; removing one waits
    for CANCEL; what changes after PREPARE is carried as the DOC in lu_fs.c
    says."""
    control_mount()
    mount_at(CANCELLED_MNT, CANCELLED)
    (CANCELLED_MNT / "f").write_bytes(b"c" * 100)
    mount_at(HELD_MNT, HELD)
    fd = os.open(HELD_MNT / "f", os.O_CREAT | os.O_RDWR, 0o600)
    stamps.write(fd, 10, 0, 16 * PAGE)
    (HELD_MNT / "g").write_bytes(b"g" * 3000)
    carry_held.save({name: (HELD_MNT / name).stat().st_ino for name in ("f", "g")})
    with Device() as dev:
        before = dev.get_state()
        dev.prepare()
        prepared = dev.get_state()
        # Each instance: its tree and its regular files (a hard link once).
        assert prepared.files - before.files == (1 + 3) + (1 + 1) + (1 + 1) + (1 + 2)
        # Unmounting discards nothing; removing waits for CANCEL.
        subprocess.run(["umount", str(CANCELLED_MNT)], check=True)
        assert fs_remove(CANCELLED) == (1, errno.EBUSY)
        dev.cancel()
        assert dev.get_state().sessions == before.sessions
        assert fs_remove(CANCELLED) == (0, None)
        assert dev.get_state().sessions == before.sessions - 1
        assert fs_remove(CANCELLED) == (1, errno.ENOENT)
        # A session with an fd is not an instance: close its fd instead.
        with dev.create_session("fd-session"):
            assert fs_remove("fd-session") == (1, errno.EPERM)
        dev.prepare()
        # After PREPARE: written pages are carried, a new file is not, the
        # size is fixed.
        stamps.write(fd, 10, 0, PAGE, generation=2)
        (HELD_MNT / "late").write_bytes(b"late")
        with pytest.raises(PermissionError):
            os.ftruncate(fd, 32 * PAGE)
        os.close(fd)
        (HELD_MNT / "g").rename(HELD_MNT / "g2")
        subprocess.run(["umount", str(HELD_MNT)], check=True)
        dev.freeze()
        assert dev.get_state().state == State.FROZEN
    # The frames the kexec carries, pinned since PREPARE: the first PREPARE
    # moved every page that was in KHO's scratch areas (CMA, where movable
    # pages may go, and where the next kernel boots) out of them.
    carry_frames.save({"tree": {path: pfns(MNT / path, size) for path, (_, size, _) in FILES.items()},
                       "vm": blob_frames()})


@pytest.mark.stage(2)
def test_kernel2_control_lists_incoming() -> None:
    control_mount()
    assert (CONTROL / "state").read_text() == "updated\n"
    assert sorted(os.listdir(CONTROL / "sessions/incoming")) == [HELD, SESSION, VM]
    assert session_info("incoming", HELD) == {"state": "pending", "instance": "yes", "files": "3", "bytes": "0"}
    listed = json.loads(cli("--json", "fs", "list").stdout)
    assert (listed["instances"], listed["unmounted"], listed["waiting"]) == ([], [], [HELD, SESSION, VM])


@pytest.mark.stage(2)
def test_kernel2_qemu_guest_ram() -> None:
    """QEMU started again on the same file finds its guest's RAM as it was,
    in the same physical pages."""
    mount_at(VM_MNT, VM)
    # Taken over: no longer incoming, outgoing again.
    assert VM not in os.listdir(CONTROL / "sessions/incoming")
    assert session_info("outgoing", VM)["instance"] == "yes"
    assert qemu(VM_MNT / "ram") == BLOB.read_bytes()
    assert blob_frames() == carry_frames.load()["vm"]
    subprocess.run(["umount", str(VM_MNT)], check=True)
    assert fs_remove(VM) == (0, None)


@pytest.mark.stage(2)
def test_kernel2_instance_through_the_device() -> None:
    """RETRIEVE_SESSION of an instance restores it and hands its session
    out: RETRIEVE_FD gives the instance's own files, by their inode numbers
    in kernel 1, and its root directory; a mount then shows the same
    files. A mount that came first ended the hand-over itself."""
    inos = carry_held.load()
    HELD_MNT.mkdir(exist_ok=True)
    with Device() as dev:
        with pytest.raises(OSError) as e:
            dev.retrieve_session(VM)
        assert e.value.errno == errno.ENOENT
        with dev.retrieve_session(HELD) as session:
            assert session_info("incoming", HELD)["state"] == "retrieved"
            f = session.retrieve(inos["f"])
            stamps.verify(f, 10, 0, 16 * PAGE, generation={0: 2})
            g = session.retrieve(inos["g"])
            assert os.pread(g, 4096, 0) == b"g" * 3000
            root = session.retrieve(abi.FS_TREE_TOKEN)
            assert sorted(os.listdir(root)) == ["f", "g2"]
            with pytest.raises(OSError) as e:
                dev.retrieve_session(HELD)
            assert e.value.errno == errno.EINVAL
            mount_at(HELD_MNT, HELD)
            for name, fd in (("f", f), ("g2", g), (".", root)):
                st, seen = os.fstat(fd), (HELD_MNT / name).stat()
                assert (st.st_dev, st.st_ino) == (seen.st_dev, seen.st_ino), name
                os.close(fd)
        assert HELD not in os.listdir(CONTROL / "sessions/incoming")
    subprocess.run(["umount", str(HELD_MNT)], check=True)


@pytest.mark.stage(2)
def test_kernel2_events_carried() -> None:
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
    assert json.loads(cli("--json", "fs", "list").stdout)["unmounted"] == [HELD]
    # Removed in kernel 1: a new, empty instance.
    mount_at(CANCELLED_MNT, CANCELLED)
    assert not any(CANCELLED_MNT.iterdir())
    subprocess.run(["umount", str(CANCELLED_MNT)], check=True)
    # Only the next test's instances go on to kernel 3.
    assert fs_remove(HELD) == (0, None)
    assert fs_remove(CANCELLED) == (0, None)


CGROUPS = Path("/sys/fs/cgroup")
CGROUP = CGROUPS / "lu-fs"


def shmem_charged() -> int:
    """Bytes of shmem charged to CGROUP (memory.stat)."""
    for line in (CGROUP / "memory.stat").read_text().splitlines():
        key, value = line.split()
        if key == "shmem":
            return int(value)
    raise AssertionError("no shmem line in memory.stat")


@pytest.mark.stage(2)
def test_kernel2_tree_back() -> None:
    before, frames = carry.load(), carry_frames.load()["tree"]
    MNT.mkdir(exist_ok=True)
    # Restored in a memory cgroup of its own: the files' pages are charged
    # to the mounting process's cgroup, as shmem.
    if not (CGROUPS / "cgroup.procs").exists():
        subprocess.run(["mount", "-t", "cgroup2", "cgroup2", str(CGROUPS)], check=True)
    (CGROUPS / "cgroup.subtree_control").write_text("+memory")
    CGROUP.mkdir(exist_ok=True)
    (CGROUP / "cgroup.procs").write_text("0")
    try:
        charged = shmem_charged()
        r = mount(f"session={SESSION}")
        charged = shmem_charged() - charged
    finally:
        (CGROUPS / "cgroup.procs").write_text("0")
    assert r.returncode == 0, r.stderr
    assert charged >= sum(count for _, _, ranges in FILES.values() for _, count in ranges) * PAGE
    now = tree()
    assert now == {path: tuple(v) for path, v in before["tree"].items()}
    for path, (file_id, size, ranges) in FILES.items():
        fd = os.open(MNT / path, os.O_RDONLY)
        assert os.fstat(fd).st_size == size
        for first, count in ranges:
            stamps.verify(fd, file_id, first * PAGE, count * PAGE)
        os.close(fd)
        assert pfns(MNT / path, size) == frames[path], f"{path}: pages moved or were copied"
    assert (MNT / "a/b/link").stat().st_ino == (MNT / "a/data").stat().st_ino
    assert os.readlink(MNT / "sym") == "a/data"
    assert stat.S_ISFIFO((MNT / "fifo").lstat().st_mode)
    assert (MNT / "null").lstat().st_rdev == os.makedev(1, 3)
    # An ordinary tmpfs from now on: it takes new files and writes.
    (MNT / "new").write_bytes(b"x" * 5000)
    assert (MNT / "new").read_bytes() == b"x" * 5000
    # Unmounting keeps it; removing it while mounted ends its hand-over,
    # and its files go with the mount.
    umount()
    assert mount(f"session={SESSION}").returncode == 0
    assert (MNT / "new").read_bytes() == b"x" * 5000
    assert fs_remove(SESSION) == (0, None)
    assert (MNT / "new").exists()
    umount()
    assert mount(f"session={SESSION}").returncode == 0
    assert not any(MNT.iterdir())
    umount()
    assert fs_remove(SESSION) == (0, None)


DAMAGED, BAD_TREE = "fs-damaged", "fs-bad-tree"
DAMAGED_MNT, BAD_TREE_MNT = Path("/tmp/lufs-damaged"), Path("/tmp/lufs-bad-tree")
PARAMS = Path("/sys/module/liveupdate/parameters")
carry_damage = Carry("fs_kexec_damage")


def kernel_log() -> str:
    return subprocess.run(["dmesg"], capture_output=True, text=True, check=True).stdout


@pytest.mark.stage(2)
def test_kernel2_damage_in_transit() -> None:
    """Damage one instance's file and another instance's tree on the way
    (debug module hooks, after the checksums were written)."""
    mount_at(DAMAGED_MNT, DAMAGED)
    for name, file_id in (("good", 20), ("bad", 21)):
        fd = os.open(DAMAGED_MNT / name, os.O_CREAT | os.O_RDWR, 0o600)
        stamps.write(fd, file_id, 0, 8 * PAGE)
        os.close(fd)
    bad = (DAMAGED_MNT / "bad").stat().st_ino
    assert (DAMAGED_MNT / "good").stat().st_ino != bad
    mount_at(BAD_TREE_MNT, BAD_TREE)
    (BAD_TREE_MNT / "d").mkdir()
    # Bit 0 of the first folio record's index; bit 3 of the root's inode number.
    (PARAMS / "test_damage_memfd").write_text(f"{bad}:0")
    (PARAMS / "test_damage_tree").write_text(f"{BAD_TREE}:3")
    carry_damage.save({"bad": bad})


@pytest.mark.stage(3)
def test_kernel3_damaged_file_comes_back_empty() -> None:
    mount_at(DAMAGED_MNT, DAMAGED)
    fd = os.open(DAMAGED_MNT / "good", os.O_RDONLY)
    stamps.verify(fd, 20, 0, 8 * PAGE)
    os.close(fd)
    assert (DAMAGED_MNT / "bad").stat().st_size == 0
    bad = carry_damage.load()["bad"]
    assert kernel_log().count(f"instance {DAMAGED}: file {bad}: damaged hand-over data") == 1
    subprocess.run(["umount", str(DAMAGED_MNT)], check=True)
    control_mount()
    assert fs_remove(DAMAGED) == (0, None)


@pytest.mark.stage(3)
def test_kernel3_damaged_tree_refuses_every_mount() -> None:
    BAD_TREE_MNT.mkdir(exist_ok=True)
    for _ in range(2):
        r = subprocess.run(["mount", "-t", "liveupdatefs", "-o", f"session={BAD_TREE}", "none",
                            str(BAD_TREE_MNT)], capture_output=True, text=True)
        assert r.returncode != 0
    with Device() as dev:
        with pytest.raises(OSError) as e:
            dev.retrieve_session(BAD_TREE)
        assert e.value.errno == errno.EIO
    assert kernel_log().count(f"instance {BAD_TREE}: damaged tree: checksum mismatch") == 1
    # FINISH ends the hand-over (the damaged pages stay reserved); the name
    # then mounts as the instance it has become: empty.
    with Device() as dev:
        dev.finish()
    mount_at(BAD_TREE_MNT, BAD_TREE)
    assert not any(BAD_TREE_MNT.iterdir())
    subprocess.run(["umount", str(BAD_TREE_MNT)], check=True)
    control_mount()
    assert fs_remove(BAD_TREE) == (0, None)
    assert os.listdir(CONTROL / "sessions/outgoing") == []
