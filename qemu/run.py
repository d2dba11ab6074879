#!/usr/bin/env python3
"""Boot the test guest under QEMU and run a plan across real kexecs.

A plan is a text file with one shell command per line; line N runs in the
guest's Nth kernel (the first is booted by QEMU, each next one is reached
by `kexec -s` from the previous). Commands run in the checkout, inside the
host's root filesystem shared read-only over 9p, with liveupdate.ko loaded
first unless --no-module. /run/out in the guest is a writable directory
of the host that survives the kexecs: stages leave data there for later
stages. The exit status is 0 only if every stage passed.
"""

from __future__ import annotations

import argparse
import gzip
import os
import re
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHECKOUT = HERE.parent
BASE_APPEND = "console=ttyS0 kho=on panic=-1 oops=panic loglevel=4"
STAGE_RE = re.compile(r"LU-STAGE (\d+)/(\d+) (BEGIN|RESULT)(.*)")
# Kernel lines that mean the guest is broken whatever the verdict says.
FATAL_RE = re.compile(r"Kernel panic|BUG:|WARNING:|Oops|general protection")


def cpio_newc(entries: list[tuple[str, int, bytes]]) -> bytes:
    """Build a newc cpio archive from (name, mode, data) entries."""
    out = bytearray()
    for ino, (name, mode, data) in enumerate(entries + [("TRAILER!!!", 0, b"")], 1):
        encoded = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
        out += b"070701" + b"".join(b"%08X" % f for f in fields) + encoded
        out += b"\0" * (-len(out) % 4) + data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


def build_initrd(path: Path) -> None:
    busybox = Path("/bin/busybox")
    if not busybox.exists():
        sys.exit("run.py: a static busybox is needed: apt-get install busybox-static")
    dirs = ["bin", "dev", "proc", "sys", "host"]
    entries = [(d, 0o40755, b"") for d in dirs]
    entries.append(("bin/busybox", 0o100755, busybox.read_bytes()))
    entries.append(("init", 0o100755, (HERE / "guest" / "init").read_bytes()))
    path.write_bytes(gzip.compress(cpio_newc(entries), compresslevel=1))


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
    parser.add_argument("--timeout", type=float, default=600, help="seconds for the whole run")
    parser.add_argument("--quiet", action="store_true", help="do not echo the serial console")
    args = parser.parse_args()

    plan = [line for line in args.plan.read_text().splitlines() if line.strip()]
    if not plan:
        sys.exit(f"run.py: {args.plan} has no stage")
    out = args.out or Path(tempfile.mkdtemp(prefix="lu-run-"))
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    build_initrd(out / "initrd.cpio.gz")
    shutil.copy(HERE / "guest" / "stage.sh", out / "stage.sh")
    (out / "plan").write_text("\n".join(plan) + "\n")
    append = f"{BASE_APPEND} {args.append}".strip()
    env = {
        "LU_CHECKOUT": str(CHECKOUT),
        "LU_KERNEL": str(args.kernel.resolve()),
        "LU_INITRD": "/run/out/initrd.cpio.gz",
        "LU_APPEND": append,
        "LU_MODULE": str(args.module.resolve()) if args.module else "",
        "LU_PYTHON": args.python,
        "LU_OUT": "/run/out",
    }
    (out / "env").write_text("".join(f"{k}='{v}'\nexport {k}\n" for k, v in env.items()))

    cmd = [
        "qemu-system-x86_64", "-accel", "tcg", "-cpu", "max",
        "-m", args.mem, "-smp", args.smp, "-nodefaults", "-display", "none",
        "-no-reboot", "-serial", "stdio", "-monitor", "none",
        "-kernel", str(args.kernel), "-initrd", str(out / "initrd.cpio.gz"),
        "-append", f"{append} lu.stage=1",
        "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
        "-virtfs", f"local,path={out},mount_tag=out,security_model=none",
    ]
    print(f"run.py: {args.plan.name}: {len(plan)} stages, output in {out}", flush=True)
    start = time.monotonic()
    log_path = out / "serial.log"
    verdict, verdict_at, results, fatal = None, 0.0, {}, []
    with open(log_path, "w") as log, subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    ) as qemu:
        assert qemu.stdout is not None
        os.set_blocking(qemu.stdout.fileno(), True)
        deadline = start + args.timeout
        sel = selectors.DefaultSelector()
        sel.register(qemu.stdout, selectors.EVENT_READ)
        buf = b""
        while True:
            if verdict is not None and time.monotonic() > verdict_at + 10:
                qemu.kill()  # the guest said its last word but did not stop
                break
            left = deadline - time.monotonic()
            if left <= 0:
                qemu.kill()
                print(f"run.py: timeout after {args.timeout:.0f} s", flush=True)
                break
            if not sel.select(timeout=min(left, 1.0)):
                continue
            chunk = os.read(qemu.stdout.fileno(), 65536)
            if not chunk:
                break
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for raw in lines:
                line = raw.decode(errors="replace").rstrip("\r")
                stamp = time.monotonic() - start
                log.write(f"[{stamp:8.3f}] {line}\n")
                if not args.quiet:
                    print(line, flush=True)
                m = STAGE_RE.search(line)
                if m and m.group(3) == "BEGIN":
                    print(f"run.py: [{stamp:7.1f} s] stage {m.group(1)}/{m.group(2)} started", flush=True)
                elif m:
                    results[int(m.group(1))] = m.group(4).split()[0]
                    print(f"run.py: [{stamp:7.1f} s] stage {m.group(1)}/{m.group(2)} exit {m.group(4).strip()}", flush=True)
                if "LU-VERDICT" in line:
                    verdict = line.split("LU-VERDICT", 1)[1].strip()
                    verdict_at = time.monotonic()
                if FATAL_RE.search(line):
                    fatal.append(line)
        qemu.wait()
    elapsed = time.monotonic() - start
    ok = verdict == "PASS" and len(results) == len(plan) and not fatal
    ok = ok and all(rc == "0" for rc in results.values())
    if not ok:
        tail = log_path.read_text().splitlines()[-60:]
        print("run.py: serial log tail:\n" + "\n".join(tail), flush=True)
        if fatal:
            print("run.py: kernel reported:\n" + "\n".join(fatal[:10]), flush=True)
    print(f"run.py: {args.plan.name}: {'PASS' if ok else 'FAIL'} "
          f"({len(results)}/{len(plan)} stages, {elapsed:.1f} s)", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
