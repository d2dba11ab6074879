"""liveupdatefs helpers on the host: mountinfo parsing and option checks
(mounting itself is tested in the guest: selftests/pytest/test_fs_kexec.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from liveupdate import fs
from liveupdate.cli import main

MOUNTINFO = """\
22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda rw
40 22 0:35 / /srv/app rw,relatime shared:20 - liveupdatefs app rw,size=8388608k,mode=700
41 22 0:36 / /srv/with\\040space rw,relatime shared:21 - liveupdatefs vm\\0401 rw,nr_inodes=10
42 22 0:37 / /tmp rw - tmpfs tmpfs rw
43 22 0:38 / /run/liveupdate rw - liveupdatefs none rw,control
"""


def test_instances_reads_liveupdatefs_mounts_only(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(MOUNTINFO)
    found = fs.instances(info)
    assert [(i.session, i.mountpoint, i.options) for i in found] == [
        ("app", "/srv/app", "rw,size=8388608k,mode=700"),
        ("vm 1", "/srv/with space", "rw,nr_inodes=10"),
    ]
    # Not mounted here: no usage figures, no failure.
    assert (found[0].used_bytes, found[0].size_bytes) == (0, 0)


@pytest.mark.parametrize("name", ["", "a" * 64, "a,b", "a=b", "a b", "back\\slash"])
def test_bad_session_names_are_refused_before_mount(name: str) -> None:
    with pytest.raises(ValueError):
        fs.mount(name, Path("/nonexistent"))


def test_cli_refuses_session_in_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["fs", "mount", "app", "/srv/app", "-o", "session=other"])
    assert e.value.code == 2
    assert "give the session as SESSION" in capsys.readouterr().err


def test_cli_mount_failure_names_the_instance(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # No liveupdatefs here (the host has no module): mount(8) fails.
    assert main(["--json", "fs", "mount", "app", str(tmp_path / "missing")]) == 1
    assert '"error": "mount app on' in capsys.readouterr().out


def test_control_is_found_and_not_an_instance(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(MOUNTINFO)
    assert fs.control(info) == Path("/run/liveupdate")
    assert "none" not in [i.session for i in fs.instances(info)]
    info.write_text(MOUNTINFO.replace(",control", ""))
    with pytest.raises(fs.FsError, match="no control instance mounted"):
        fs.control(info)


def test_set_state_refuses_unknown_events() -> None:
    with pytest.raises(ValueError, match="one of prepare"):
        fs.set_state("reboot")


def test_listing_adds_unmounted_and_waiting_instances(tmp_path: Path) -> None:
    control = tmp_path / "control"
    for direction, name, text in (
        ("outgoing", "app", "state open\ninstance yes\nfiles 0\nbytes 0\n"),
        ("outgoing", "idle", "state open\ninstance yes\nfiles 0\nbytes 0\n"),
        ("outgoing", "fd-session", "state open\ninstance no\nfiles 1\nbytes 4096\n"),
        ("incoming", "vm", "state pending\ninstance yes\nfiles 2\nbytes 0\n"),
        ("incoming", "taken", "state retrieved\ninstance yes\nfiles 2\nbytes 0\n"),
    ):
        (control / "sessions" / direction).mkdir(parents=True, exist_ok=True)
        (control / "sessions" / direction / name).write_text(text)
    info = tmp_path / "mountinfo"
    info.write_text(MOUNTINFO.replace("/run/liveupdate", str(control)))
    found = fs.listing(info)
    assert [i.session for i in found.mounted] == ["app", "vm 1"]
    assert (found.unmounted, found.waiting) == (["idle"], ["vm"])
    info.write_text(MOUNTINFO.replace(",control", ""))
    assert (fs.listing(info).unmounted, fs.listing(info).waiting) == (None, None)
