"""`liveupdate kexec` refuses a kernel that cannot take the sessions over, before loading it."""

from __future__ import annotations

import errno
import subprocess
from pathlib import Path
from typing import Any

import pytest

from liveupdate import kexec, target
from liveupdate.errors import LiveUpdateError

WRITES = 4


def fake_bzimage(path: Path, version: str | None = "7.2.99 (builder@host) #1 SMP PREEMPT") -> Path:
    """A file with a bzImage's setup header, as far as the check reads it."""
    image = bytearray(0x400)
    image[0x202:0x206] = b"HdrS"
    if version is not None:
        image[0x20E:0x210] = (0x300 - 0x200).to_bytes(2, "little")
        image[0x300:0x300 + len(version)] = version.encode()
    path.write_bytes(bytes(image))
    return path


def fake_module(path: Path, modinfo: bytes) -> Path:
    """An ELF object with a .modinfo section: all modinfo reads of a module."""
    path.parent.mkdir(parents=True, exist_ok=True)
    obj, info = path.with_suffix(".o"), path.with_suffix(".info")
    subprocess.run(["gcc", "-c", "-x", "c", "-", "-o", str(obj)], input=b"int x;\n", check=True)
    info.write_bytes(modinfo)
    subprocess.run(["objcopy", "--add-section", f".modinfo={info}", str(obj), str(path)], check=True)
    return path


@pytest.fixture
def host(tmp_path: Path) -> dict[str, Path]:
    """A /boot and /lib/modules with 7.2.99 installed as a KHO kernel with liveupdate-dkms."""
    boot, modules = tmp_path / "boot", tmp_path / "modules"
    boot.mkdir()
    (boot / "config-7.2.99").write_text("# comment\nCONFIG_KEXEC_HANDOVER=y\nCONFIG_KEXEC_FILE=y\n"
                                        "# CONFIG_LIVEUPDATE is not set\n")
    fake_module(modules / "7.2.99/updates/dkms/liveupdate.ko", b"handover_reads=4\0license=GPL\0")
    return {"image": fake_bzimage(tmp_path / "vmlinuz"), "boot": boot, "modules": modules}


def check(host: dict[str, Path], writes: int = WRITES) -> target.Target:
    return target.check(host["image"], writes, boot=host["boot"], modules=host["modules"])


def test_a_kernel_that_can_take_over_passes(host: dict[str, Path]) -> None:
    found = check(host)
    assert found.problems == []
    assert found.release == "7.2.99"
    assert found.module == host["modules"] / "7.2.99/updates/dkms/liveupdate.ko"


def test_the_release_comes_from_the_image(tmp_path: Path) -> None:
    assert target.image_release(fake_bzimage(tmp_path / "a", "6.18.0-rc1+ #3")) == "6.18.0-rc1+"
    with pytest.raises(target.TargetError, match="does not say"):
        target.image_release(fake_bzimage(tmp_path / "b", None))
    (tmp_path / "c").write_bytes(b"\x7fELF" + bytes(1000))
    with pytest.raises(target.TargetError, match="not a bzImage"):
        target.image_release(tmp_path / "c")


def test_a_kernel_without_kho_is_named(host: dict[str, Path]) -> None:
    (host["boot"] / "config-7.2.99").write_text("# CONFIG_KEXEC_HANDOVER is not set\n")
    assert [p for p in check(host).problems if "7.2.99 has no KHO" in p]


def test_mainline_luo_built_in_is_named(host: dict[str, Path]) -> None:
    (host["boot"] / "config-7.2.99").write_text("CONFIG_KEXEC_HANDOVER=y\nCONFIG_LIVEUPDATE=y\n")
    assert check(host).problems == [
        "7.2.99 has mainline's LUO built in (CONFIG_LIVEUPDATE=y), which does not read liveupdate.ko's hand-over"]


def test_the_build_trees_config_counts(host: dict[str, Path]) -> None:
    (host["boot"] / "config-7.2.99").rename(host["modules"] / "7.2.99/.config")
    (host["modules"] / "7.2.99/build").mkdir()
    (host["modules"] / "7.2.99/.config").rename(host["modules"] / "7.2.99/build/.config")
    assert check(host).problems == []


def test_no_config_is_named(host: dict[str, Path]) -> None:
    (host["boot"] / "config-7.2.99").unlink()
    assert [p for p in check(host).problems if "no config of 7.2.99" in p]


def test_no_module_is_named(host: dict[str, Path]) -> None:
    (host["modules"] / "7.2.99/updates/dkms/liveupdate.ko").unlink()
    assert [p for p in check(host).problems if "no liveupdate.ko for 7.2.99" in p]


@pytest.mark.parametrize(("modinfo", "said"), [
    (b"handover_reads=3\0", "reads hand-over formats 3; this kernel's module writes format 4"),
    (b"license=GPL\0", "does not say which hand-over formats it reads"),
])
def test_a_module_that_reads_another_format_is_named(host: dict[str, Path], modinfo: bytes, said: str) -> None:
    module = host["modules"] / "7.2.99/updates/dkms/liveupdate.ko"
    module.unlink()
    fake_module(module, modinfo)
    assert [p for p in check(host).problems if said in p]


def test_a_module_that_reads_several_formats(host: dict[str, Path]) -> None:
    module = host["modules"] / "7.2.99/updates/dkms/liveupdate.ko"
    module.unlink()
    fake_module(module, b"handover_reads=3,4\0")
    assert check(host).problems == []
    assert [p for p in check(host, writes=5).problems if "writes format 5" in p]


def test_live_update_refuses_before_loading_anything(host: dict[str, Path],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing is loaded, no event is sent; --force goes on (to the kexec tool, stood in for)."""
    (host["boot"] / "config-7.2.99").unlink()
    monkeypatch.setattr(target, "BOOT", host["boot"])
    monkeypatch.setattr(target, "MODULES", host["modules"])
    monkeypatch.setattr(kexec, "check_ready", lambda: None)
    calls: list[Any] = []

    def kexec_tool(*args: str) -> None:
        calls.append(args)
        raise kexec.KexecError("stop here")

    monkeypatch.setattr(kexec, "_kexec", kexec_tool)
    status = {"state": "normal", "format_version": WRITES, "bytes_serialized": 0, "sessions": 0, "files": 0}
    steps: list[tuple[str, dict[str, Any]]] = []

    def send(event: Any) -> dict[str, Any]:
        calls.append(event)
        return {}

    with pytest.raises(LiveUpdateError) as refused:
        kexec.live_update(send, lambda: status, host["image"], None, "", lambda s, d: steps.append((s, d)))
    assert refused.value.errno == errno.ENOEXEC
    assert "no config of 7.2.99" in str(refused.value) and "--force" in str(refused.value)
    assert calls == [] and steps == []
    with pytest.raises(kexec.KexecError, match="stop here"):
        kexec.live_update(send, lambda: status, host["image"], None, "", lambda s, d: steps.append((s, d)),
                          force=True)
    assert steps[0][0] == "checked" and steps[0][1]["forced"] is True
    assert calls[0][:2] == ("-s", "-l")
