#!/usr/bin/env python3
"""Boot the test guest under QEMU and run a plan across real kexecs.

A plan is a text file with one shell command per line; line N runs in the
guest's Nth kernel (the first is booted by QEMU, each next one is reached
by `kexec -s` from the previous). A line may start with "[N]": the stage
must then report exactly N tests passed (kselftest "# Totals:" lines and
pytest summaries on the console are added up) and none skipped, failed
or in error, so a stage that silently ran nothing or skipped fails.
Lines starting with "#" are comments; "# guest memory: SIZE" gives the
plan a guest of SIZE (QEMU's -m) instead of --mem, and "# guest kernel:
lean" runs it on --lean-kernel with --lean-module (no --append) instead
of --kernel and --module. Commands run in the
checkout, inside the host's root filesystem shared read-only over 9p,
with liveupdate.ko (--module) loaded first unless the line starts with
"[N manual-load]": then the command loads it. /run/out in the guest is a
writable directory of the host that survives the kexecs: stages leave
data there for later stages. /dev/vda is an empty scratch disk (swap for
the tests that need it). The guest's Python comes from a disk image of
its own (pyimage.py), at the same paths. The exit status is 0 only if every stage
passed.
"""

from __future__ import annotations

import argparse
import gzip
import os
import re
import selectors
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import monitor
import pyimage

HERE = Path(__file__).resolve().parent
CHECKOUT = HERE.parent
# The guest mounts tmpfs on /tmp and /run, so the checkout (which may live
# under /tmp) gets its own share, mounted here.
GUEST_CHECKOUT = "/run/checkout"
# loglevel=5 puts every warning on the console; a WARN panics the guest.
# earlycon: a kernel that dies before its console starts still says why.
# No legacy PTYs: creating their 256 pairs took 2.8 s of each debug boot.
# No clocksource watchdog on the TSC: its check of the other CPU's clock
# (7.2's, which already timed out in most TCG boots) spun in CPU 0's timer
# softirq while CPU 1 sat in the stop_machine() that switches to the
# refined TSC, and a debug boot never came back.
BASE_APPEND = ("console=ttyS0 earlycon=uart8250,io,0x3f8 kho=on panic=-1 oops=panic panic_on_warn=1 "
               "loglevel=5 pty.legacy_count=0 tsc=nowatchdog")
STAGE_RE = re.compile(r"LU-STAGE (\d+)/(\d+) (BEGIN|RESULT)(.*)")
# Kernel lines that mean the guest is broken whatever the verdict says:
# oopses, WARN (lockdep, DEBUG_LIST and DEBUG_OBJECTS report through it),
# KASAN and KFENCE ("BUG: KASAN"), soft lockups, hung tasks, RCU stalls,
# and the leaks stage.sh finds with kmemleak.
FATAL_RE = re.compile(r"Kernel panic|BUG:|WARNING:|Oops|general protection|"
                      r"INFO: task .* blocked|detected stalls|LU-GUEST kmemleak:")
EXPECT_RE = re.compile(r"^\[(\d+)( manual-load)?\]\s+(.*)$")
# The scratch disk (/dev/vda in the guest): sparse, removed after the run.
SCRATCH_BYTES = 256 << 20
# From a stage's passing RESULT (the kexec follows: stage.sh's, or the
# command's own) the next stage BEGINs within about a minute on the debug
# kernel, two guests at once. Not begun by then: the guest hangs.
NEXT_STAGE_WITHIN = 300
# How a hung guest is asked for its tasks: QEMU's serial multiplexer sends
# a BREAK on C-a b, and the kernel takes the key after it as SysRq (debug
# kernel: CONFIG_MAGIC_SYSRQ_SERIAL). 8: console log level 8, or the task
# dumps (KERN_INFO) stay off the console; w: tasks blocked, killable ones
# too (which the hung-task detector skips); t: every task.
SYSRQ_KEYS = "8wt"
SYSRQ_OUTPUT_WAIT = 6.0
MEMORY_RE = re.compile(r"^#\s*guest memory:\s*(\d+[MG])\s*$")
LEAN_RE = re.compile(r"^#\s*guest kernel:\s*lean\s*$")
SYSTEMD_RE = re.compile(r"^#\s*guest:\s*systemd\s*$")
# How stage.sh learns that a stage loads the module itself.
MANUAL_LOAD = "#manual-load "
KSFT_TOTALS_RE = re.compile(r"# Totals: pass:(\d+) fail:(\d+) xfail:(\d+) xpass:(\d+) "
                            r"skip:(\d+) error:(\d+)")
PYTEST_SUMMARY_RE = re.compile(r"^=*\s*((?:\d+ [a-z]+(?:, )?)+) in [\d.]+s")


class Counts:
    """Tests a stage reported: passed, and everything that is not a pass."""

    def __init__(self) -> None:
        self.passed = 0
        self.other: dict[str, int] = {}

    def add(self, what: str, n: int) -> None:
        if what == "passed":
            self.passed += n
        elif n and what not in ("deselected", "warning", "warnings"):
            self.other[what] = self.other.get(what, 0) + n

    def parse(self, line: str) -> None:
        m = KSFT_TOTALS_RE.search(line)
        if m:
            for what, n in zip(("passed", "failed", "xfailed", "xpassed", "skipped", "error"),
                               m.groups(), strict=True):
                self.add(what, int(n))
            return
        m = PYTEST_SUMMARY_RE.search(line)
        if m:
            for part in m.group(1).split(", "):
                n, what = part.split(" ", 1)
                self.add(what, int(n))

    def check(self, expected: int) -> str | None:
        """Why the stage's tests do not prove it ran what it should, or None."""
        if self.other:
            return f"{self.passed} passed, but also {self.other}"
        if self.passed != expected:
            return f"{self.passed} tests passed, the plan expects {expected}"
        return None


def parse_plan(text: str) -> list[tuple[int | None, str]]:
    """The plan's stages: (tests expected or None, command as stage.sh reads it)."""
    stages: list[tuple[int | None, str]] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = EXPECT_RE.match(line.strip())
        if m:
            stages.append((int(m.group(1)), (MANUAL_LOAD if m.group(2) else "") + m.group(3)))
        else:
            stages.append((None, line))
    return stages


def plan_memory(text: str) -> str | None:
    """The guest memory the plan asks for ("# guest memory: 6G"), if any."""
    sizes = [m.group(1) for m in map(MEMORY_RE.match, text.splitlines()) if m]
    return sizes[-1] if sizes else None


def plan_guest(text: str) -> str | None:
    """The kind of guest the plan asks for: "lean" ("# guest kernel: lean"),
    "systemd" ("# guest: systemd"), or None (the debug kernel's busybox guest)."""
    lines = text.splitlines()
    if any(SYSTEMD_RE.match(line) for line in lines):
        return "systemd"
    return "lean" if any(LEAN_RE.match(line) for line in lines) else None


def guest_path(path: Path) -> str:
    """Where the guest sees a host file: the checkout is remounted, the rest is the host's root."""
    path = path.resolve()
    if path.is_relative_to(CHECKOUT):
        return f"{GUEST_CHECKOUT}/{path.relative_to(CHECKOUT)}"
    return str(path)


def cpio_newc(entries: list[tuple[str, int, bytes]]) -> bytes:
    """Build a newc cpio archive from (name, mode, data) entries."""
    out = bytearray()
    for ino, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], 1):
        encoded = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
        out += b"070701" + b"".join(b"%08X" % f for f in fields) + encoded
        out += b"\0" * (-len(out) % 4) + data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


def stage_env(env: dict[str, str], plan: list[str]) -> str:
    """What stage.sh sources: @env exported, and the plan's commands, which
    only stage.sh reads (LU_COMMAND_1 to LU_COMMAND_$LU_STAGES)."""
    commands = {f"LU_COMMAND_{stage}": command for stage, command in enumerate(plan, 1)}
    return ("".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())
            + f"export LU_STAGES={len(plan)}\n"
            + "".join(f"{k}={shlex.quote(v)}\n" for k, v in commands.items()))


# Every program qemu/guest/init runs.
INIT_APPLETS = ("chroot", "mkdir", "mount", "reboot", "sync")


def build_initrd(path: Path) -> None:
    busybox = Path("/bin/busybox")
    if not busybox.exists():
        sys.exit("run.py: a static busybox is needed: apt-get install busybox-static")
    dirs = ["bin", "dev", "proc", "sys", "host"]
    entries = [(d, 0o40755, b"") for d in dirs]
    entries.append(("bin/busybox", 0o100755, busybox.read_bytes()))
    # The applets init runs, as links made here: busybox --install made
    # hundreds in each boot (half a second on the debug kernel).
    entries += [(f"bin/{applet}", 0o120777, b"busybox") for applet in INIT_APPLETS]
    entries.append(("init", 0o100755, (HERE / "guest" / "init").read_bytes()))
    path.write_bytes(gzip.compress(cpio_newc(entries), compresslevel=1))


class Console:
    """Reads the guest's serial console: logs it, reports stages, finds the verdict."""

    def __init__(self, log_path: Path, echo: bool, start: float) -> None:
        self.log = open(log_path, "w")  # noqa: SIM115 - closed in follow()
        # Set while the guest is between a stage's passing result and the next stage.
        self.next_stage_due: float | None = None
        self.buf = b""
        self.echo = echo
        self.start = start
        self.verdict: str | None = None
        self.results: dict[int, str] = {}
        self.fatal: list[str] = []
        self.counts: dict[int, Counts] = {}
        self.current: int | None = None

    def line(self, line: str) -> None:
        stamp = time.monotonic() - self.start
        self.log.write(f"[{stamp:8.3f}] {line}\n")
        if self.echo:
            print(line, flush=True)
        m = STAGE_RE.search(line)
        if m:
            stage, what, rest = f"{m.group(1)}/{m.group(2)}", m.group(3), m.group(4).strip()
            if what == "BEGIN":
                self.current = int(m.group(1))
                self.counts[self.current] = Counts()
                self.next_stage_due = None
            else:
                rc = self.results[int(m.group(1))] = rest.split()[0]
                self.current = None
                if rc == "0" and m.group(1) != m.group(2):
                    self.next_stage_due = time.monotonic() + NEXT_STAGE_WITHIN
            word = "started" if what == "BEGIN" else f"exit {rest}"
            print(f"run.py: [{stamp:7.1f} s] stage {stage} {word}", flush=True)
        elif self.current is not None:
            self.counts[self.current].parse(line)
        if "LU-VERDICT" in line:
            self.verdict = line.split("LU-VERDICT", 1)[1].strip()
        if FATAL_RE.search(line):
            self.fatal.append(line)

    def read(self, fd: int, sel: selectors.BaseSelector, timeout: float) -> bool:
        """Log what the guest prints within ``timeout`` s; False once QEMU's output ends."""
        if not sel.select(timeout=timeout):
            return True
        chunk = os.read(fd, 65536)
        if not chunk:
            return False
        self.buf += chunk
        *lines, self.buf = self.buf.split(b"\n")
        for raw in lines:
            self.line(raw.decode(errors="replace").rstrip("\r"))
        return True

    def hung(self, now: float, deadline: float) -> str | None:
        """Why the guest counts as hung now, or None."""
        if self.next_stage_due is not None and now > self.next_stage_due:
            return f"no next stage {NEXT_STAGE_WITHIN} s after the last one passed"
        if now > deadline:
            return f"timeout after {deadline - self.start:.0f} s"
        return None

    def follow(self, qemu: subprocess.Popen[bytes], deadline: float, where: Callable[[], str]) -> None:
        """Read until QEMU exits, the deadline passes, the guest lingers after its
        verdict or does not reach its next stage; a hung guest is asked for its
        tasks (SysRq) and `where` tells where its CPUs are."""
        assert qemu.stdout is not None
        fd = qemu.stdout.fileno()
        sel = selectors.DefaultSelector()
        sel.register(fd, selectors.EVENT_READ)
        verdict_deadline = None
        while True:
            now = time.monotonic()
            if self.verdict is not None and verdict_deadline is None:
                verdict_deadline = now + 10
            if verdict_deadline is not None and now > verdict_deadline:
                qemu.kill()  # the guest said its last word but did not stop
                break
            why = self.hung(now, deadline)
            if why:
                self.line(f"run.py: {why}; the guest's tasks (SysRq {SYSRQ_KEYS}) and CPUs:")
                self.ask_tasks(qemu, fd, sel)
                for line in where().splitlines():
                    self.line(f"run.py:   {line}")
                qemu.kill()
                print(f"run.py: {why}", flush=True)
                break
            if not self.read(fd, sel, 1.0):
                break
        self.log.close()

    def ask_tasks(self, qemu: subprocess.Popen[bytes], fd: int, sel: selectors.BaseSelector) -> None:
        """Send SysRq keys over the serial console and log the answers."""
        for key in SYSRQ_KEYS:
            try:
                assert qemu.stdin is not None
                qemu.stdin.write(b"\x01b" + key.encode())
                qemu.stdin.flush()
            except (OSError, ValueError):
                return
            until = time.monotonic() + SYSRQ_OUTPUT_WAIT
            while (left := until - time.monotonic()) > 0:
                if not self.read(fd, sel, min(left, 1.0)):
                    return


@dataclass
class Guest:
    """What differs between kinds of guest: its boot files, disks and stage.sh's settings."""

    kernel: Path
    initrd: Path
    append: str
    env: dict[str, str]
    devices: list[str]
    symbols: Path


def busybox_guest(args: argparse.Namespace, out: Path) -> Guest:
    """The host's root read-only over 9p, a busybox initramfs, a scratch disk
    (/dev/vda) and the tests' Python on a disk of its own."""
    build_initrd(out / "initrd.cpio.gz")
    scratch = out / "scratch.img"
    with scratch.open("wb") as disk:
        disk.truncate(SCRATCH_BYTES)
    python_image = pyimage.build(args.python)
    append = f"{BASE_APPEND} {args.append}".strip()
    env = {
        "LU_KERNEL": guest_path(args.kernel),
        "LU_INITRD": "/run/out/initrd.cpio.gz",
        "LU_MODULE": guest_path(args.module) if args.module else "",
        "LU_PYTHON": args.python,
    }
    devices = [
        "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
        # Devices in this order: the scratch disk is /dev/vda.
        "-drive", f"file={scratch},format=raw,if=none,id=scratch,cache=unsafe",
        "-device", "virtio-blk-pci,drive=scratch",
        "-drive", f"file={python_image},format=raw,if=none,id=python,readonly=on",
        "-device", f"virtio-blk-pci,drive=python,serial={pyimage.SERIAL}",
    ]
    return Guest(args.kernel, out / "initrd.cpio.gz", append, env, devices,
                 args.kernel.resolve().parents[3] / "System.map")


def systemd_guest(args: argparse.Namespace, out: Path) -> Guest:
    """A Debian root with systemd as PID 1 on its own disk (qemu/systemd-image.sh),
    booted from its installed kernel and initramfs; each run writes to a copy
    on write of the disk. The stage runs from lu-stage.service and kexecs with
    ``systemctl kexec``."""
    image = args.systemd_image
    release = (image / "release").read_text().strip()
    overlay = out / "root.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw",
                    "-b", str((image / "root.img").resolve()), str(overlay)], check=True)
    append = f"{BASE_APPEND} root=/dev/vda rw {args.append}".strip()
    env = {
        "LU_KERNEL": f"/boot/vmlinuz-{release}",
        "LU_INITRD": f"/boot/initrd.img-{release}",
        "LU_MODULE": "",  # the initramfs loads the module DKMS built
        "LU_PYTHON": "/usr/bin/python3",
        "LU_PYTHONPATH": "",  # python3-liveupdate as installed, not the checkout's
        "LU_KEXEC": "systemctl kexec",
    }
    devices = [
        "-drive", f"file={overlay},format=qcow2,if=none,id=root,cache=unsafe",
        "-device", "virtio-blk-pci,drive=root",
    ]
    return Guest(image / "vmlinuz", image / "initrd.img", append, env, devices, image / "System.map")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("plan", type=Path, help="file with one command per kernel")
    parser.add_argument("--kernel", type=Path, required=True, help="bzImage")
    parser.add_argument("--module", type=Path, help="liveupdate.ko to load in each stage")
    parser.add_argument("--python", default=sys.executable, help="Python for the guest")
    parser.add_argument("--out", type=Path, help="output directory (default: a temporary one)")
    parser.add_argument("--mem", default="3G")
    parser.add_argument("--smp", default="2")
    parser.add_argument("--append", default="", help="extra kernel command line")
    parser.add_argument("--lean-kernel", type=Path, help="bzImage for plans that ask for the lean kernel")
    parser.add_argument("--lean-module", type=Path, help="liveupdate.ko for those plans")
    parser.add_argument("--systemd-image", type=Path,
                        help="qemu/systemd-image.sh's directory, for plans that ask for systemd")
    # A kexec'd kernel stores into pages that held the old kernel's and its
    # programs' code; QEMU takes its slow path for each store into such a
    # page until the page's translations are gone, or until the whole
    # translation buffer is flushed, which a buffer of 256 MiB does about
    # every 40 s instead of never (QEMU's default, 1 GiB). The systemd
    # guest's boot after a kexec: 27-30 s instead of 50-77 s; debug
    # plans 3-5 % faster.
    parser.add_argument("--tb-size", type=int, default=256,
                        help="TCG translation buffer in MiB (0: QEMU's default)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds for the whole run")
    parser.add_argument("--quiet", action="store_true", help="do not echo the serial console")
    args = parser.parse_args()

    text = args.plan.read_text()
    stages = parse_plan(text)
    memory = plan_memory(text) or args.mem
    kind = plan_guest(text)
    if kind == "lean":
        if not args.lean_kernel:
            sys.exit(f"run.py: {args.plan} asks for the lean kernel: give --lean-kernel")
        args.kernel, args.module, args.append = args.lean_kernel, args.lean_module, ""
    if kind == "systemd" and not args.systemd_image:
        sys.exit(f"run.py: {args.plan} asks for the systemd guest: give --systemd-image")
    plan = [command for _, command in stages]
    if not plan:
        sys.exit(f"run.py: {args.plan} has no stage")
    out = args.out or Path(tempfile.mkdtemp(prefix="lu-run-"))
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    shutil.copy(HERE / "guest" / "stage.sh", out / "stage.sh")
    guest = systemd_guest(args, out) if kind == "systemd" else busybox_guest(args, out)
    env = {"LU_CHECKOUT": GUEST_CHECKOUT, "LU_OUT": "/run/out", "LU_APPEND": guest.append, **guest.env}
    (out / "env").write_text(stage_env(env, plan))
    # A short path: a Unix socket's path is limited to 107 bytes.
    monitor_socket = Path(tempfile.mkdtemp(prefix="lu-monitor-")) / "sock"

    accel = f"tcg,tb-size={args.tb_size}" if args.tb_size else "tcg"
    cmd = [
        "qemu-system-x86_64", "-accel", accel, "-cpu", "max",
        "-m", memory, "-smp", args.smp, "-nodefaults", "-display", "none",
        "-no-reboot", "-chardev", "stdio,id=console,mux=on,signal=off",
        "-serial", "chardev:console", "-monitor", f"unix:{monitor_socket},server=on,wait=off",
        # Without ACPI PCI hotplug, whose AML took most of the 5 s that
        # ACPI's init took in each debug boot.
        "-global", "PIIX4_PM.acpi-pci-hotplug-with-bridge-support=off",
        "-global", "PIIX4_PM.acpi-root-pci-hotplug=off",
        "-kernel", str(guest.kernel), "-initrd", str(guest.initrd),
        "-append", f"{guest.append} lu.stage=1",
        "-virtfs", f"local,path={CHECKOUT},mount_tag=checkout,security_model=none,readonly=on,multidevs=remap",
        "-virtfs", f"local,path={out},mount_tag=out,security_model=none",
        *guest.devices,
    ]
    print(f"run.py: {args.plan.name}: {len(plan)} stages, output in {out}", flush=True)
    symbols = monitor.SymbolMap(guest.symbols)
    start = time.monotonic()
    console = Console(out / "serial.log", echo=not args.quiet, start=start)
    try:
        with subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT) as qemu:
            console.follow(qemu, start + args.timeout, lambda: monitor.where(monitor_socket, symbols))
            qemu.wait()
    finally:
        for disk in ("scratch.img", "root.qcow2"):
            (out / disk).unlink(missing_ok=True)
        shutil.rmtree(monitor_socket.parent)
    verdict, results, fatal = console.verdict, console.results, console.fatal
    elapsed = time.monotonic() - start
    ok = verdict == "PASS" and len(results) == len(plan) and not fatal
    ok = ok and all(rc == "0" for rc in results.values())
    for number, (expected, _) in enumerate(stages, 1):
        why = None
        if expected is not None:
            why = console.counts.get(number, Counts()).check(expected)
        if why:
            print(f"run.py: stage {number}: {why}", flush=True)
            ok = False
    if not ok:
        tail = (out / "serial.log").read_text().splitlines()[-60:]
        print("run.py: serial log tail:\n" + "\n".join(tail), flush=True)
        if fatal:
            print("run.py: kernel reported:\n" + "\n".join(fatal[:10]), flush=True)
    print(f"run.py: {args.plan.name}: {'PASS' if ok else 'FAIL'} "
          f"({len(results)}/{len(plan)} stages, {elapsed:.1f} s)", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
