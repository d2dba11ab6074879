"""The agent's wire protocol over a real SOCK_SEQPACKET socket pair."""

from __future__ import annotations

import errno
import os
import socket

import pytest

from liveupdate import protocol


@pytest.fixture
def pair():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    yield a, b
    a.close()
    b.close()


def test_message_with_an_fd(pair) -> None:
    a, b = pair
    r, w = os.pipe()
    protocol.send(a, {"op": "preserve", "session": "vm1", "token": 1}, [r])
    message, fds = protocol.receive(b)
    assert message == {"op": "preserve", "session": "vm1", "token": 1}
    assert len(fds) == 1
    os.write(w, b"same pipe")
    assert os.read(fds[0], 9) == b"same pipe"
    for fd in (r, w, *fds):
        os.close(fd)


def test_peer_closed(pair) -> None:
    a, b = pair
    a.close()
    assert protocol.receive(b) is None


@pytest.mark.parametrize(("raw", "err"), [(b"{not json", errno.EPROTO), (b"[1, 2]", errno.EPROTO),
                                          (b"\xff\xfe", errno.EPROTO)])
def test_malformed(pair, raw: bytes, err: int) -> None:
    a, b = pair
    a.send(raw)
    with pytest.raises(protocol.ProtocolError) as exc:
        protocol.receive(b)
    assert exc.value.errno == err


def test_oversized_keeps_its_fds_for_closing(pair) -> None:
    a, b = pair
    r, w = os.pipe()
    socket.send_fds(a, [b"x" * (protocol.MAX_MESSAGE + 10)], [r])
    with pytest.raises(protocol.ProtocolError) as exc:
        protocol.receive(b)
    assert exc.value.errno == errno.EMSGSIZE
    assert len(exc.value.fds) == 1
    for fd in (r, w, *exc.value.fds):
        os.close(fd)


def test_encode_refuses_oversized() -> None:
    with pytest.raises(protocol.ProtocolError):
        protocol.encode({"blob": "x" * protocol.MAX_MESSAGE})


@pytest.mark.parametrize("raw", [b"[" * 5000, b"1" * 5000, b'{"a":' * 3000])
def test_hostile_json_is_a_protocol_error(pair, raw: bytes) -> None:
    # Before: RecursionError and ValueError escaped the decoder and ended the agent.
    a, b = pair
    a.send(raw)
    with pytest.raises(protocol.ProtocolError) as exc:
        protocol.receive(b)
    assert exc.value.errno == errno.EPROTO
