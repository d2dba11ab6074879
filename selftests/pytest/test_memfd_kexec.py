"""Large, sparse and many memfds across a real kexec, through the Python binding.

Kernel 1 preserves a 64 MiB random memfd, a fully written 256 MiB memfd of
stamped pages, a 64 GiB sparse memfd with stamped pages scattered across
it, and 64 small memfds; kernel 2 retrieves them, checks every page (each
carries its file, index and generation, so a swapped, stale or zero page
fails; holes must stay holes), uses them, and finishes the session. (Its
speed is measured by bench/, on the lean kernel.)
"""

from __future__ import annotations

import hashlib
import mmap
import os
import random

import pytest
import stamps
from conftest import Carry

from liveupdate import Device, hold_fds_until_kexec

MIB = 1 << 20
PAGE = stamps.PAGE
SESSION = "py-memfds"
RANDOM_TOKEN, SPARSE_TOKEN, FULL_TOKEN = 1, 2, 3
RANDOM_SIZE = 64 * MIB
SPARSE_SIZE = 64 << 30
SPARSE_PAGES = 64
FULL_SIZE = 256 * MIB
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
    # Scattered over the whole file, its first and last page included.
    last = SPARSE_SIZE // PAGE - 1
    indexes = sorted({0, last, *rng.sample(range(1, last), SPARSE_PAGES - 2)})
    for index in indexes:
        stamps.write(sparse_fd, SPARSE_TOKEN, index * PAGE, PAGE)
    full_fd = os.memfd_create("full")
    os.ftruncate(full_fd, FULL_SIZE)
    stamps.write(full_fd, FULL_TOKEN, 0, FULL_SIZE)
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
    carry.save({"random": sha256_of(random_fd, RANDOM_SIZE), "sparse_pages": indexes})
    hold_fds_until_kexec()


@pytest.mark.stage(2)
def test_kernel2_retrieve() -> None:
    expected = carry.load()
    with Device() as dev, dev.retrieve_session(SESSION) as session:
        random_fd = session.retrieve(RANDOM_TOKEN)
        assert os.fstat(random_fd).st_size == RANDOM_SIZE
        assert sha256_of(random_fd, RANDOM_SIZE) == expected["random"]

        full_fd = session.retrieve(FULL_TOKEN)
        assert os.fstat(full_fd).st_size == FULL_SIZE
        stamps.verify(full_fd, FULL_TOKEN, 0, FULL_SIZE)
        os.close(full_fd)

        sparse_fd = session.retrieve(SPARSE_TOKEN)
        st = os.fstat(sparse_fd)
        indexes = expected["sparse_pages"]
        assert st.st_size == SPARSE_SIZE
        assert st.st_blocks * 512 == len(indexes) * PAGE
        pos = 0
        for index in indexes:
            assert os.lseek(sparse_fd, pos, os.SEEK_DATA) == index * PAGE
            assert os.lseek(sparse_fd, index * PAGE, os.SEEK_HOLE) == (index + 1) * PAGE
            stamps.verify(sparse_fd, SPARSE_TOKEN, index * PAGE, PAGE)
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
