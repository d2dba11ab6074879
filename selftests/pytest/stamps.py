"""Stamped pages: each page says which file, page and generation it is.

Every 4 KiB page starts with a header (magic, file id, page index,
generation, CRC32 of the rest of the page) followed by a body that depends
on the file. A page that was swapped, duplicated, left stale (an older
generation), zeroed or damaged anywhere therefore fails the comparison,
and the failure names the page and what it holds instead.
"""

from __future__ import annotations

import functools
import hashlib
import os
import struct
import zlib
from collections.abc import Iterator

PAGE = 4096
MAGIC = b"LUPG"
HEADER = struct.Struct("<4sIQII")  # magic, file id, page index, generation, CRC32 of the rest
BODY_SIZE = PAGE - HEADER.size
CHUNK_PAGES = 256  # pages written or checked per system call


@functools.cache
def body(file_id: int) -> bytes:
    """The part of every page of ``file_id`` after the header."""
    seed = hashlib.sha256(b"lu-file %d" % file_id).digest()
    return (seed * (BODY_SIZE // len(seed) + 1))[:BODY_SIZE]


def checksum(file_id: int, index: int, generation: int, rest: bytes) -> int:
    return zlib.crc32(rest, zlib.crc32(struct.pack("<IQI", file_id, index, generation)))


def page(file_id: int, index: int, generation: int) -> bytes:
    rest = body(file_id)
    return HEADER.pack(MAGIC, file_id, index, generation, checksum(file_id, index, generation, rest)) + rest


def pages(file_id: int, first: int, count: int, generation: int) -> bytes:
    """Pages ``first`` .. ``first + count - 1`` of ``file_id``, as written in ``generation``."""
    return b"".join(page(file_id, index, generation) for index in range(first, first + count))


def chunks(offset: int, size: int) -> Iterator[tuple[int, int]]:
    """(first page, page count) of each system call's share of [offset, offset + size)."""
    assert offset % PAGE == 0 and size % PAGE == 0
    for start in range(offset, offset + size, CHUNK_PAGES * PAGE):
        yield start // PAGE, min(CHUNK_PAGES, (offset + size - start) // PAGE)


def write(fd: int, file_id: int, offset: int, size: int, generation: int = 1) -> None:
    """Stamp [offset, offset + size) of ``fd`` (page aligned) as ``generation``."""
    for first, count in chunks(offset, size):
        os.pwrite(fd, pages(file_id, first, count, generation), first * PAGE)


def describe(data: bytes) -> str:
    """What a page that failed the comparison holds."""
    if data == bytes(len(data)):
        return "zeros"
    magic, file_id, index, generation, crc = HEADER.unpack_from(data)
    if magic != MAGIC:
        return f"no stamp ({data[:16].hex()}...)"
    intact = crc == checksum(file_id, index, generation, data[HEADER.size:])
    return f"file {file_id} page {index} generation {generation}" + ("" if intact else ", damaged")


def verify(fd: int, file_id: int, offset: int, size: int, generation: int | dict[int, int] = 1) -> None:
    """Every page of [offset, offset + size) is the stamped page expected there.

    ``generation`` is one generation for all pages, or a map from page
    index to generation for pages rewritten later (the rest: generation 1).
    """
    generations = {} if isinstance(generation, int) else generation
    default = generation if isinstance(generation, int) else 1
    for first, count in chunks(offset, size):
        expected = b"".join(page(file_id, i, generations.get(i, default)) for i in range(first, first + count))
        got = os.pread(fd, count * PAGE, first * PAGE)
        if got == expected:
            continue
        for i in range(count):
            want, have = expected[i * PAGE:(i + 1) * PAGE], got[i * PAGE:(i + 1) * PAGE]
            if want != have:
                raise AssertionError(f"file {file_id} page {first + i}: expected {describe(want)}, "
                                     f"found {describe(have) if len(have) == PAGE else f'{len(have)} bytes'}")


def damage(fd: int, file_id: int, offset: int, size: int) -> str | None:
    """What verify() finds wrong with [offset, offset + size) of ``fd``, or None
    (for a process that reports rather than asserts: a service of the systemd guest)."""
    try:
        verify(fd, file_id, offset, size)
    except AssertionError as e:
        return str(e)
    return None
