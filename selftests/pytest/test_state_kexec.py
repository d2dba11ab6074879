"""The state machine through the Python binding, across a real kexec.

Kernel 1 checks that event errors name what failed, then preserves a fully
written 1 GiB memfd and an unclaimed 256 MiB one, times PREPARE and FREEZE
(the figures the orchestration is for) while the workload keeps writing,
and kexecs. Kernel 2 finds the state UPDATED, checks the data including
the write made after PREPARE, and FINISH releases the unclaimed memfd.
"""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
import random
import time
from pathlib import Path

import pytest
from conftest import Carry

from liveupdate import Device, LiveUpdateError, State, hold_fds_until_kexec

MIB = 1 << 20
BIG_SIZE = 1024 * MIB
UNCLAIMED_SIZE = 256 * MIB
LATE_OFFSET = 700 * MIB + 123
PARAMS = Path("/sys/module/liveupdate/parameters")
carry = Carry("state_kexec")


def sha256_of(fd: int, size: int) -> str:
    with mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ) as m:
        return hashlib.sha256(m).hexdigest()


def filled_memfd(name: str, size: int, seed: int) -> int:
    """A memfd of ``size`` bytes: a random MiB repeated, each copy stamped with its number."""
    block = random.Random(seed).randbytes(MIB)
    fd = os.memfd_create(name)
    for i in range(size // MIB):
        os.write(fd, i.to_bytes(8, "little") + block[8:])
    return fd


@pytest.mark.stage(1)
def test_kernel1_event_errors_name_the_cause() -> None:
    with Device() as dev:
        assert dev.get_state().state == State.NORMAL
        with pytest.raises(LiveUpdateError) as exc:
            dev.freeze()
        assert exc.value.errno == errno.EBUSY
        assert "prepare first" in str(exc.value)

        fd = filled_memfd("fails", MIB, 5)
        with dev.create_session("py-fails") as session:
            session.preserve(fd, 5)
            (PARAMS / "test_fail_prepare").write_text("5")
            try:
                with pytest.raises(LiveUpdateError) as exc:
                    dev.prepare()
            finally:
                (PARAMS / "test_fail_prepare").write_text("0")
        assert exc.value.errno == errno.EIO
        assert "prepare (session 'py-fails', token 5)" in str(exc.value)
        state = dev.get_state()
        assert (state.state, state.sessions, state.bytes_serialized) == (State.NORMAL, 0, 0)
        os.close(fd)


@pytest.mark.stage(1)
def test_kernel1_dependencies() -> None:
    a = filled_memfd("a", MIB, 3)
    b = filled_memfd("b", MIB, 4)
    with Device() as dev, dev.create_session("py-deps") as session:
        with pytest.raises(LiveUpdateError) as exc:
            session.preserve(b, 2, deps=[2])
        assert exc.value.errno == errno.EINVAL
        session.preserve(a, 1, deps=[7])
        with pytest.raises(LiveUpdateError) as exc:
            dev.prepare()
        assert exc.value.errno == errno.ENOENT
        assert "(session 'py-deps', token 7)" in str(exc.value)
        session.preserve(b, 7)
        dev.prepare()
        assert dev.get_state().bytes_serialized == 2 * MIB
        dev.cancel()
    os.close(a)
    os.close(b)


@pytest.mark.stage(1)
def test_kernel1_prepare_and_freeze_1gib() -> None:
    big = filled_memfd("big", BIG_SIZE, 1)
    unclaimed = filled_memfd("unclaimed", UNCLAIMED_SIZE, 2)
    dev = Device()
    session = dev.create_session("py-big")
    session.preserve(big, 1)
    other = dev.create_session("py-unclaimed")
    other.preserve(unclaimed, 1)

    start = time.monotonic()
    dev.prepare()
    prepare_s = time.monotonic() - start
    state = dev.get_state()
    assert state.state == State.PREPARED
    assert state.bytes_serialized == BIG_SIZE + UNCLAIMED_SIZE

    # Brownout: the workload still writes, in place, and it is carried.
    os.pwrite(big, b"written after PREPARE", LATE_OFFSET)
    start = time.monotonic()
    dev.freeze()
    freeze_s = time.monotonic() - start
    assert dev.get_state().state == State.FROZEN

    print(f"\nPREPARE {BIG_SIZE + UNCLAIMED_SIZE >> 20} MiB: {prepare_s * 1000:.0f} ms "
          f"({prepare_s / 1.25 * 1000:.0f} ms/GiB); FREEZE: {freeze_s * 1000:.1f} ms")
    carry.save({"sha256": sha256_of(big, BIG_SIZE), "prepare_s": prepare_s, "freeze_s": freeze_s})
    hold_fds_until_kexec()


@pytest.mark.stage(2)
def test_kernel2_updated_then_finish() -> None:
    facts = carry.load()
    with Device() as dev:
        state = dev.get_state()
        assert state.state == State.UPDATED
        assert state.kho_boot
        assert (state.incoming_sessions, state.incoming_files) == (2, 2)
        with dev.retrieve_session("py-big") as session:
            fd = session.retrieve(1)
            assert os.pread(fd, 21, LATE_OFFSET) == b"written after PREPARE"
            assert sha256_of(fd, BIG_SIZE) == facts["sha256"]
            result = dev.finish()
            assert (result.released_sessions, result.released_files) == (1, 1)
            assert result.released_bytes == UNCLAIMED_SIZE
            assert dev.get_state().state == State.NORMAL
            # The retrieved file stays an ordinary, usable memfd.
            assert os.pread(fd, 8, 5 * MIB) == (5).to_bytes(8, "little")
            os.close(fd)
        with pytest.raises(LiveUpdateError) as exc:
            dev.retrieve_session("py-unclaimed")
        assert exc.value.errno == errno.ENOENT
