"""qemu/pyimage.py: the guest's Python disk holds what this Python imports, once per content."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "qemu"))
import pyimage


def test_shipped_covers_the_stdlib_and_packages() -> None:
    shipped = pyimage.shipped(sys.executable)
    for key in ("stdlib", "purelib"):
        where = Path(sysconfig.get_paths()[key]).resolve()
        assert any(where == p or where.is_relative_to(p) for p in shipped), (key, shipped)
    assert Path(sys.executable).resolve() in shipped or any(
        Path(sys.executable).resolve().is_relative_to(p) for p in shipped)


def test_image_is_built_once_and_lists_its_mounts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVEUPDATE_CACHE", str(tmp_path))
    image = pyimage.build(sys.executable)
    assert pyimage.build(sys.executable) == image
    mounts = subprocess.run(["debugfs", "-R", f"cat /{pyimage.MOUNTS}", str(image)], check=True,
                            capture_output=True, text=True).stdout.splitlines()
    paths = [line.split(" ", 1)[1] for line in mounts]
    assert paths == [str(p) for p in pyimage.shipped(sys.executable)]
    # Another Python's packages and CPython's tests are left out, their directories kept.
    stdlib = paths.index(str(Path(sysconfig.get_paths()["stdlib"]).resolve()))
    listing = subprocess.run(["debugfs", "-R", f"ls -l /{stdlib}/test", str(image)], check=True,
                             capture_output=True, text=True).stdout
    assert "__init__.py" not in listing
