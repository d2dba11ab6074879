"""Large and many memfds across a real kexec, through the Python binding.

Kernel 1 preserves a 256 MiB random memfd, a sparse 1 GiB memfd with a few
written pages, and 64 small memfds; kernel 2 retrieves them, checks them
byte for byte (holes included), uses them, and finishes the session.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import random
import time

import pytest
from conftest import Carry, hold_fds_until_kexec

from liveupdate import Device

MIB = 1 << 20
PAGE = 4096
SESSION = "py-memfds"
RANDOM_TOKEN, SPARSE_TOKEN = 1, 2
RANDOM_SIZE = 256 * MIB
SPARSE_SIZE = 1024 * MIB
SMALL_TOKENS = range(100, 164)
carry = Carry("memfd_kexec")


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
    for token, fd in small.items():
        session.preserve(fd, token)
    carry.save({
        "random": sha256_of(random_fd, RANDOM_SIZE),
        "sparse_pages": {str(i): h for i, h in pages.items()},
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
