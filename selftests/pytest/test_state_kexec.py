"""The state machine through the Python binding, across a real kexec.

Kernel 1 checks that event errors name what failed, then preserves a fully
written 256 MiB memfd and an unclaimed 64 MiB one, PREPAREs, rewrites a
page (the workload keeps writing during the brownout), FREEZEs and
kexecs. Kernel 2 finds the state UPDATED, checks every page (each carries
its file, index and generation: the rewritten page must be the new one),
and FINISH releases the unclaimed memfd. (PREPARE and FREEZE times are
measured by bench/, on the lean kernel.)
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import stamps

from liveupdate import Device, LiveUpdateError, State, hold_fds_until_kexec

MIB = 1 << 20
BIG_SIZE = 256 * MIB
UNCLAIMED_SIZE = 64 * MIB
LATE_PAGE = 45678  # rewritten after PREPARE, as generation 2
PARAMS = Path("/sys/module/liveupdate/parameters")


def filled_memfd(name: str, size: int, file_id: int) -> int:
    """A memfd of ``size`` bytes of stamped pages of ``file_id``."""
    fd = os.memfd_create(name)
    os.ftruncate(fd, size)
    stamps.write(fd, file_id, 0, size)
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
def test_kernel1_prepare_write_freeze() -> None:
    big = filled_memfd("big", BIG_SIZE, 1)
    unclaimed = filled_memfd("unclaimed", UNCLAIMED_SIZE, 2)
    dev = Device()
    session = dev.create_session("py-big")
    session.preserve(big, 1)
    other = dev.create_session("py-unclaimed")
    other.preserve(unclaimed, 1)

    dev.prepare()
    state = dev.get_state()
    assert state.state == State.PREPARED
    assert state.bytes_serialized == BIG_SIZE + UNCLAIMED_SIZE

    # Brownout: the workload still writes, in place, and it is carried.
    stamps.write(big, 1, LATE_PAGE * stamps.PAGE, stamps.PAGE, generation=2)
    dev.freeze()
    assert dev.get_state().state == State.FROZEN
    hold_fds_until_kexec()


@pytest.mark.stage(2)
def test_kernel2_updated_then_finish() -> None:
    with Device() as dev:
        state = dev.get_state()
        assert state.state == State.UPDATED
        assert state.kho_boot
        assert (state.incoming_sessions, state.incoming_files) == (2, 2)
        with dev.retrieve_session("py-big") as session:
            fd = session.retrieve(1)
            stamps.verify(fd, 1, 0, BIG_SIZE, {LATE_PAGE: 2})
            result = dev.finish()
            assert (result.released_sessions, result.released_files) == (1, 1)
            assert result.released_bytes == UNCLAIMED_SIZE
            assert dev.get_state().state == State.NORMAL
            # The retrieved file stays an ordinary, usable memfd.
            stamps.verify(fd, 1, 5 * MIB, MIB)
            os.close(fd)
        with pytest.raises(LiveUpdateError) as exc:
            dev.retrieve_session("py-unclaimed")
        assert exc.value.errno == errno.ENOENT
