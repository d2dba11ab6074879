"""Whether the kernel about to be kexec'd can take this one's sessions over.

Checked before anything is loaded, from files alone (nothing is loaded or
run but ``modinfo``): the target's release, read from its bzImage's setup
header; its config (``/boot/config-RELEASE`` as Debian installs it, or the
build tree's ``.config``), which must have KHO and must not have mainline's
LUO built in; a ``liveupdate.ko`` installed for it under
``/lib/modules/RELEASE`` (DKMS puts it in ``updates/dkms``); and that
module reading the hand-over format this kernel's module writes (its
modinfo field ``handover_reads``).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

BOOT = Path("/boot")
MODULES = Path("/lib/modules")
# The x86 boot protocol's setup header: its magic, and the field that
# points (less 0x200) to the kernel's version string.
HEADER_MAGIC = (0x202, b"HdrS")
VERSION_POINTER = 0x20E


class TargetError(ValueError):
    """The target kernel image cannot be read as one."""


@dataclass
class Target:
    """What was found of the target kernel, and what stands in the way."""

    release: str | None = None
    config: Path | None = None
    module: Path | None = None
    problems: list[str] = field(default_factory=list)


def image_release(image: Path) -> str:
    """The kernel release of a bzImage ("7.2.13"), from its setup header."""
    try:
        with image.open("rb") as f:
            header = f.read(0x210)
            start, magic = HEADER_MAGIC
            if header[start:start + len(magic)] != magic:
                raise TargetError(f"{image} is not a bzImage (no setup header)")
            pointer = int.from_bytes(header[VERSION_POINTER:VERSION_POINTER + 2], "little")
            f.seek(pointer + 0x200)
            version = f.read(256).split(b"\0", 1)[0].decode(errors="replace").split()
    except OSError as e:
        raise TargetError(f"cannot read {image}: {e.strerror}") from e
    if not pointer or not version:
        raise TargetError(f"{image} does not say its kernel release")
    return version[0]


def read_config(path: Path) -> dict[str, str]:
    """A kernel config's set options: {"CONFIG_KEXEC_HANDOVER": "y", ...}."""
    options = {}
    for line in path.read_text(errors="replace").splitlines():
        name, sep, value = line.partition("=")
        if sep and name.startswith("CONFIG_"):
            options[name] = value
    return options


def module_field(module: Path, name: str) -> str:
    """One modinfo field of a module file ("" if it has none)."""
    tool = shutil.which("modinfo") or next((p for p in ("/sbin/modinfo", "/usr/sbin/modinfo")
                                            if Path(p).exists()), None)
    if tool is None:
        raise TargetError("modinfo not found: install kmod")
    done = subprocess.run([tool, "-F", name, str(module)], capture_output=True, text=True)
    if done.returncode:
        raise TargetError(f"modinfo {module}: {done.stderr.strip() or f'exit {done.returncode}'}")
    return done.stdout.strip()


def find_module(release: str, modules: Path) -> Path | None:
    """The liveupdate.ko installed for ``release``, DKMS's (updates/) first."""
    found = sorted(modules.joinpath(release).rglob("liveupdate.ko*"),
                   key=lambda p: (not p.is_relative_to(modules / release / "updates"), str(p)))
    return found[0] if found else None


def check(image: Path, writes: int, boot: Path | None = None, modules: Path | None = None) -> Target:
    """What keeps the kernel in ``image`` from taking over a hand-over of format ``writes``
    (looked up under ``boot`` and ``modules``, by default BOOT and MODULES)."""
    boot, modules = boot or BOOT, modules or MODULES
    target = Target()
    try:
        target.release = release = image_release(image)
    except TargetError as e:
        target.problems.append(str(e))
        return target
    configs = [boot / f"config-{release}", modules / release / "build/.config"]
    target.config = next((c for c in configs if c.is_file()), None)
    if target.config is None:
        target.problems.append(f"no config of {release} ({configs[0]}): cannot tell whether it has KHO")
    else:
        options = read_config(target.config)
        if options.get("CONFIG_KEXEC_HANDOVER") != "y":
            target.problems.append(f"{release} has no KHO (CONFIG_KEXEC_HANDOVER is not set in {target.config})")
        if options.get("CONFIG_LIVEUPDATE") == "y":
            target.problems.append(f"{release} has mainline's LUO built in (CONFIG_LIVEUPDATE=y), "
                                   "which does not read liveupdate.ko's hand-over")
    target.module = find_module(release, modules)
    if target.module is None:
        target.problems.append(f"no liveupdate.ko for {release} under {modules / release} "
                               "(install liveupdate-dkms and the kernel's headers)")
        return target
    try:
        reads = module_field(target.module, "handover_reads")
    except TargetError as e:
        target.problems.append(str(e))
        return target
    versions = {int(v) for v in reads.split(",") if v.strip().isdigit()}
    if writes not in versions:
        said = f"reads hand-over formats {reads}" if reads else "does not say which hand-over formats it reads"
        target.problems.append(f"{target.module} {said}; this kernel's module writes format {writes}")
    return target
