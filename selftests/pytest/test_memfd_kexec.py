"""Large and many memfds across a real kexec, through the Python binding.

Kernel 1 preserves a 256 MiB random memfd, a fully written 1 GiB memfd, a
sparse 1 GiB memfd with a few written pages, and 64 small memfds; kernel 2
retrieves them, checks them byte for byte (holes included), uses them, and
finishes the session. It prints the restore cost per GiB next to the cost
of writing the same data into a new memfd from userspace.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import random
import time

import pytest
from conftest import Carry

from liveupdate import Device, hold_fds_until_kexec

MIB = 1 << 20
PAGE = 4096
SESSION = "py-memfds"
RANDOM_TOKEN, SPARSE_TOKEN, FULL_TOKEN = 1, 2, 3
RANDOM_SIZE = 256 * MIB
SPARSE_SIZE = 1024 * MIB
FULL_SIZE = 1024 * MIB
SMALL_TOKENS = range(100, 164)
carry = Carry("memfd_kexec")


def full_chunk(block: bytes, i: int) -> bytes:
    """MiB number ``i`` of the full memfd: a shared random block stamped with its number."""
    return i.to_bytes(8, "little") + block[8:]


def sha256_of(fd: int, size: int) -> str:
    if not size:
        return hashlib.sha256().hexdigest()
    with mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ) as m:
        return hashlib.sha256(m).hexdigest()


@pytest.mark.stage(1)
def test_kernel1_preserve() -> None:
    rng = random.Random(1)
    random_fd = os.memfd_create("random")
    os.write(random_fd, os.urandom(RANDOM_SIZE))
    sparse_fd = os.memfd_create("sparse")
    os.ftruncate(sparse_fd, SPARSE_SIZE)
    offsets = sorted(rng.sample(range(SPARSE_SIZE // PAGE), 5))
    pages = {}
    for index in offsets:
        data = rng.randbytes(PAGE)
        os.pwrite(sparse_fd, data, index * PAGE)
        pages[index] = hashlib.sha256(data).hexdigest()
    full_fd = os.memfd_create("full")
    block = rng.randbytes(MIB)
    for i in range(FULL_SIZE // MIB):
        os.write(full_fd, full_chunk(block, i))
    small = {}
    for token in SMALL_TOKENS:
        fd = os.memfd_create(f"small-{token}")
        os.write(fd, f"memfd {token} ".encode() * token)
        os.lseek(fd, token, os.SEEK_SET)
        small[token] = fd

    dev = Device()
    session = dev.create_session(SESSION)
    session.preserve(random_fd, RANDOM_TOKEN)
    session.preserve(sparse_fd, SPARSE_TOKEN)
    session.preserve(full_fd, FULL_TOKEN)
    for token, fd in small.items():
        session.preserve(fd, token)
    carry.save({
        "random": sha256_of(random_fd, RANDOM_SIZE),
        "sparse_pages": {str(i): h for i, h in pages.items()},
        "full_block": block.hex(),
    })
    hold_fds_until_kexec()


@pytest.mark.stage(2)
def test_kernel2_retrieve() -> None:
    expected = carry.load()
    with Device() as dev, dev.retrieve_session(SESSION) as session:
        start = time.monotonic()
        random_fd = session.retrieve(RANDOM_TOKEN)
        seconds = time.monotonic() - start
        print(f"restore of {RANDOM_SIZE // MIB} MiB: {seconds:.3f} s, {seconds * 1024 * MIB / RANDOM_SIZE:.2f} s/GiB")
        assert os.fstat(random_fd).st_size == RANDOM_SIZE
        assert sha256_of(random_fd, RANDOM_SIZE) == expected["random"]

        start = time.monotonic()
        full_fd = session.retrieve(FULL_TOKEN)
        restore = time.monotonic() - start
        block = bytes.fromhex(expected["full_block"])
        assert os.fstat(full_fd).st_size == FULL_SIZE
        for i in range(FULL_SIZE // MIB):
            assert os.pread(full_fd, MIB, i * MIB) == full_chunk(block, i), f"MiB {i}"
        os.close(full_fd)
        start = time.monotonic()
        baseline_fd = os.memfd_create("baseline")
        for _ in range(FULL_SIZE // MIB):
            os.write(baseline_fd, block)
        baseline = time.monotonic() - start
        os.close(baseline_fd)
        print(f"restore of 1 GiB: {restore:.2f} s; writing 1 GiB into a new memfd from userspace: {baseline:.2f} s")

        sparse_fd = session.retrieve(SPARSE_TOKEN)
        st = os.fstat(sparse_fd)
        pages = {int(i): h for i, h in expected["sparse_pages"].items()}
        assert st.st_size == SPARSE_SIZE
        assert st.st_blocks * 512 == len(pages) * PAGE
        pos = 0
        for index in sorted(pages):
            assert os.lseek(sparse_fd, pos, os.SEEK_DATA) == index * PAGE
            assert os.lseek(sparse_fd, index * PAGE, os.SEEK_HOLE) == (index + 1) * PAGE
            assert hashlib.sha256(os.pread(sparse_fd, PAGE, index * PAGE)).hexdigest() == pages[index]
            pos = (index + 1) * PAGE

        for token in SMALL_TOKENS:
            fd = session.retrieve(token)
            assert os.lseek(fd, 0, os.SEEK_CUR) == token
            assert os.pread(fd, 1 << 20, 0) == f"memfd {token} ".encode() * token
            os.close(fd)
        session.finish()

    # The restored memfd is an ordinary shmem file again.
    with mmap.mmap(random_fd, RANDOM_SIZE) as m:
        m[:5] = b"hello"
    assert os.pread(random_fd, 5, 0) == b"hello"
    os.ftruncate(random_fd, RANDOM_SIZE * 2)
    os.ftruncate(sparse_fd, 0)
    assert os.fstat(sparse_fd).st_blocks == 0
