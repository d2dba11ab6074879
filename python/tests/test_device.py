"""The binding's behaviour that needs no kernel: names, errors, closed objects."""

from __future__ import annotations

import errno

import pytest

from liveupdate import Device, LiveUpdateError, Session
from liveupdate.device import _encode_name
from liveupdate.errors import ioctl_error, open_error


@pytest.mark.parametrize("name", ["", "x" * 64, "a\0b"])
def test_bad_session_names_are_refused_before_the_kernel(name: str) -> None:
    with pytest.raises(ValueError, match="session name"):
        _encode_name(name)


def test_longest_name_fits() -> None:
    assert _encode_name("y" * 63) == b"y" * 63


def test_missing_device_says_to_load_the_module(tmp_path) -> None:
    with pytest.raises(LiveUpdateError) as exc:
        Device(str(tmp_path / "liveupdate"))
    assert exc.value.errno == errno.ENOENT
    assert "insmod liveupdate.ko" in str(exc.value)


def test_busy_device_message() -> None:
    err = open_error(errno.EBUSY, "/dev/liveupdate")
    assert isinstance(err, OSError)
    assert "only one may open it" in str(err)


@pytest.mark.parametrize("operation", ["create_session", "preserve"])
def test_a_full_table_is_explained(operation: str) -> None:
    assert "hand-over table is full" in str(ioctl_error(errno.ENOSPC, operation, ""))


def test_ioctl_error_names_operation_and_hint() -> None:
    err = ioctl_error(errno.EEXIST, "preserve", "token 7 in session 'vm'")
    assert err.errno == errno.EEXIST
    assert str(err).startswith("preserve token 7 in session 'vm': File exists")
    assert "token is used" in str(err)


def test_closed_session_refuses_calls() -> None:
    session = Session(-1, "gone", incoming=False)
    assert session.closed
    with pytest.raises(ValueError, match="closed"):
        session.fileno()


@pytest.mark.parametrize(("token", "deps"), [(-1, ()), (1 << 64, ()), ("1", ()), (1, (-1,)), (1, (1 << 64,)),
                                             (1, tuple(range(2, 19)))])
def test_bad_tokens_and_deps_are_refused_before_the_kernel(token: object, deps: tuple) -> None:
    # Before: struct.error or OverflowError from deep inside, which ended the agent.
    with open("/dev/null") as null:
        session = Session(null.fileno(), "s", incoming=False)
        with pytest.raises(ValueError, match=r"token|dependenc"):
            session.preserve(null, token, deps)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="token"):
            session.retrieve(-1)
