"""The guest's Python on a disk of its own.

The guest reads the host's root over 9p, where every file costs several
round trips through QEMU: on the debug kernel under TCG, a cold
``import pytest`` took half a minute, paid again after every kexec. So
the interpreter, its standard library and the venv's packages also go
into a read-only ext4 image, attached as a virtio disk with the serial
number SERIAL; the guest's init mounts it and binds each tree over the
same path of the host's root, so paths do not change (qemu/guest/init).

The image is built once per content (every shipped file's path, size and
mtime) into the cache, beside the kernels.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

SERIAL = "lu-python"
# Lists "INDEX PATH" per line: the image's directory or file INDEX is
# bound over PATH.
MOUNTS = "mounts"
_PATHS_SCRIPT = """
import json, os, sys, sysconfig
paths = sysconfig.get_paths()
lib = os.path.join(sysconfig.get_config_var("LIBDIR") or "", sysconfig.get_config_var("LDLIBRARY") or "")
print(json.dumps({"trees": [paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")],
                  "files": [os.path.realpath(sys.executable), lib]}))
"""


def cache_dir() -> Path:
    base = os.environ.get("LIVEUPDATE_CACHE") or \
        os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "liveupdate")
    return Path(base)


# Left empty in a shipped tree: another Python's packages (a tree of its
# own when this Python uses them) and CPython's own test suite.
SKIPPED = frozenset({"site-packages", "dist-packages", "test"})


def shipped(python: str) -> list[Path]:
    """What the guest's Python reads: its trees (outer before inner) and files."""
    found = json.loads(subprocess.run([python, "-c", _PATHS_SCRIPT], check=True,
                                      capture_output=True, text=True).stdout)
    trees = sorted({Path(os.path.realpath(t)) for t in found["trees"] if os.path.isdir(t)})
    files = [Path(os.path.realpath(f)) for f in found["files"] if os.path.isfile(f)]
    return trees + [f for f in dict.fromkeys(files) if not any(f.is_relative_to(t) for t in trees)]


def _skipped(directory: str, names: list[str]) -> set[str]:
    return {n for n in names if n in SKIPPED and os.path.isdir(os.path.join(directory, n))}


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def inventory(paths: list[Path]) -> tuple[str, int, int]:
    """What the image will hold, in one walk: its content key (every path,
    size and mtime), its bytes, and its files and directories."""
    digest = hashlib.sha256()
    size = entries = 0
    for top in paths:
        digest.update(f"{top}\0".encode())
        walk = [(str(top.parent), [], [top.name])] if top.is_file() else os.walk(top)
        for root, dirs, names in walk:
            dirs.sort()
            entries += len(dirs) + len(names)
            skipped = _skipped(root, dirs)
            dirs[:] = [d for d in dirs if d not in skipped]
            for name in sorted(names):
                st = os.lstat(os.path.join(root, name))
                size += st.st_size
                digest.update(f"{root}/{name}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return digest.hexdigest()[:12], size, entries


def _stage(paths: list[Path], into: Path) -> None:
    """Copy PATHS into INTO as 0, 1, ... plus MOUNTS; SKIPPED directories are left empty."""
    for index, top in enumerate(paths):
        dest = into / str(index)
        if top.is_file():
            shutil.copy2(top, dest)
            continue
        left_out: list[Path] = []

        def ignore(directory: str, names: list[str], top: Path = top, left_out: list[Path] = left_out) -> set[str]:
            skipped = _skipped(directory, names)
            left_out.extend(Path(directory, name).relative_to(top) for name in skipped)
            return skipped

        shutil.copytree(top, dest, symlinks=True, ignore=ignore, copy_function=_link_or_copy)
        for relative in left_out:
            (dest / relative).mkdir()
    (into / MOUNTS).write_text("".join(f"{i} {p}\n" for i, p in enumerate(paths)))


def build(python: str) -> Path:
    """The image for PYTHON, from the cache or built now (one builder at a time)."""
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    paths = shipped(python)
    key, size, entries = inventory(paths)
    image = cache / f"python-{key}.ext4"
    with open(cache / "python-image.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if image.exists():
            return image
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            staging = Path(tmp) / "root"
            staging.mkdir()
            _stage(paths, staging)
            partial = Path(tmp) / image.name
            # Room for ext4's metadata and one inode per file and directory, with slack.
            blocks = (size * 5 // 4 + (64 << 20)) // 4096
            subprocess.run(["mkfs.ext4", "-q", "-F", "-L", SERIAL, "-b", "4096", "-N", str(entries + 4096),
                            "-d", str(staging), str(partial), str(blocks)], check=True)
            for old in cache.glob("python-*.ext4"):
                old.unlink()  # a guest still running keeps its open copy
            partial.rename(image)
    return image
