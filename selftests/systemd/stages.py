"""The systemd guest's stages: liveupdate installed from its Debian packages
on a Debian root with systemd as PID 1, and systemd's fd store carried
across real kexecs (``systemctl kexec``) through /dev/liveupdate.

    python3 stages.py fdstore N      (N: the plan's kernel, 1 to 3)
    python3 stages.py agent,fs N     (1 or 2; either alone, or both in
                                      one boot, as make check runs them)

Kernel 1: DKMS built the module and the initramfs loaded it before PID 1
started, the package's agent runs; two enabled services store a memfd
and a LUO session of their own in their fd stores. Kernel 2: PID 1 gave
both back at boot, every page intact; then the stores are cleaned. Kernel 3: nothing came back.

The agent's plan: a VM-like service hands its memory to liveupdated,
started by systemd as the package sets it up; after ``systemctl kexec``
(which stops the agent first) the service takes it back from the agent.
The liveupdatefs plan: a service keeps its state in an instance that a
mount unit mounts and the service binds to its state directory
(BindPaths=); after ``systemctl kexec`` (which unmounts it) the mount
unit takes the instance over at boot and the service finds its state.
Prints kselftest's "ok"/"not ok" lines and its "# Totals:".
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = Path("/run/out")
UNITS = ("lu-test-memfd.service", "lu-test-session.service")
PAGES_BYTES = 256 * 4096


class Checks:
    def __init__(self) -> None:
        self.passed = self.failed = 0

    def __call__(self, what: str, test: Callable[[], object]) -> None:
        try:
            result = test()
            if isinstance(result, tuple):  # expect(): the verdict, and what was found
                ok, detail = result
            else:
                ok, detail = bool(result), result if isinstance(result, str) else ""
        except Exception as e:  # every failure is reported, then counted
            ok, detail = False, f"{type(e).__name__}: {e}"
        number = self.passed + self.failed + 1
        print(f"{'ok' if ok else 'not ok'} {number} {what}{' # ' + detail if detail else ''}", flush=True)
        if ok:
            self.passed += 1
        else:
            self.failed += 1

    def totals(self) -> int:
        print(f"# Totals: pass:{self.passed} fail:{self.failed} xfail:0 xpass:0 skip:0 error:0", flush=True)
        return 0 if self.failed == 0 else 1


def expect(ok: bool, found: object) -> tuple[bool, str]:
    """A check's verdict, with what was found when it fails."""
    return ok, "" if ok else (found if isinstance(found, str) else json.dumps(found))


def run(*cmd: str) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)}: exit {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def store_size(unit: str) -> int:
    return int(run("systemctl", "show", "-P", "NFileDescriptorStore", unit).strip())


def service_said(mode: str) -> dict[str, object]:
    return json.loads((OUT / f"fdstore-{mode}.json").read_text())


def status() -> dict[str, object]:
    return json.loads(run("liveupdate", "status", "--json"))


def loaded_before_pid1() -> str | bool:
    """The module's first kernel line comes before systemd's own first line."""
    log = run("dmesg").splitlines()
    module = next(i for i, line in enumerate(log) if "liveupdate" in line)
    systemd = next(i for i, line in enumerate(log) if "running in system mode" in line)
    return module < systemd and f"kernel log line {module} < {systemd}"


def agent_exposure() -> str | bool:
    """systemd's own rating of the agent's sandbox ("... 1.3 OK")."""
    done = subprocess.run(["systemd-analyze", "security", "--no-pager", "liveupdated.service"],
                          capture_output=True, text=True)
    line = done.stdout.strip().splitlines()[-1]
    score = float(line.split("exposure level for liveupdated.service:")[1].split()[0])
    return score < 3.0 and line


def kernel1(check: Checks) -> None:
    release = os.uname().release
    check("DKMS installed liveupdate.ko for the running kernel",
          lambda: run("modinfo", "-n", "liveupdate").strip() == f"/lib/modules/{release}/updates/dkms/liveupdate.ko")
    check("the initramfs loaded the module before PID 1 started", loaded_before_pid1)
    check("liveupdate status finds nothing missing", lambda: status()["problems"] == [])
    # The package enabled the agent, which started on this kho=on boot.
    check("liveupdated runs, started by systemd from the package's units",
          lambda: run("systemctl", "is-active", "liveupdated.service").strip() == "active")
    check("systemd-analyze security rates liveupdated.service below 3.0", agent_exposure)
    # The services below open /dev/liveupdate themselves, which only one
    # process may hold: the agent goes (its own test holds it instead).
    run("systemctl", "disable", "--now", "liveupdated.socket", "liveupdated.service")
    for unit in UNITS:
        shutil.copy(HERE / unit, f"/etc/systemd/system/{unit}")
    run("systemctl", "daemon-reload")
    run("systemctl", "enable", "--now", *UNITS)
    check("the memfd service stored its memfd", lambda: service_said("memfd")["stored"] == "memfd")
    check("the session service stored its session", lambda: service_said("session")["stored"] == "session")
    for unit in UNITS:
        check(f"{unit} has one fd in its store", lambda unit=unit: store_size(unit) == 1)


def kernel2(check: Checks) -> None:
    for mode, name in (("memfd", "data"), ("session", "session")):
        said = service_said(mode)
        check(f"the {mode} service got its fd back at boot, named {name!r}",
              lambda said=said, name=name: expect(said.get("passed_names") == [name], said))
        check(f"every page of the {mode} service's memfd is intact",
              lambda said=said: expect((said.get("size"), said.get("damage")) == (PAGES_BYTES, None), said))
    check("the session came back under its own name",
          lambda: service_said("session").get("name") == "lu-test-service")
    for unit in UNITS:
        check(f"{unit}'s store holds its fd again", lambda unit=unit: store_size(unit) == 1)
    # (How many incoming sessions are left by now depends on who finished
    # theirs: the session service and PID 1 do.)
    check("this boot came through KHO", lambda: expect(status()["kho_boot"] is True, status()))
    check("the services stop and their stores are cleaned",
          lambda: run("systemctl", "stop", *UNITS) is not None and run("systemctl", "clean", "--what=fdstore", *UNITS)
          is not None and [store_size(unit) for unit in UNITS] == [0, 0])


def kernel3(check: Checks) -> None:
    for mode in ("memfd", "session"):
        check(f"the {mode} service got nothing back, and stored anew",
              lambda mode=mode: expect(service_said(mode).get("passed_names") == [], service_said(mode)))
    check("this boot came through KHO", lambda: expect(status()["kho_boot"] is True, status()))


def vm_said() -> dict[str, object]:
    return json.loads((OUT / "vm.json").read_text())


def agent_sessions() -> dict[str, dict[str, object]]:
    return {s["name"]: s for s in json.loads(run("liveupdate", "session", "list", "--json"))["sessions"]}


def agent_kernel1(check: Checks) -> None:
    check("liveupdated runs, started by systemd from the package's units",
          lambda: run("systemctl", "is-active", "liveupdated.service").strip() == "active")
    shutil.copy(HERE / "lu-test-vm.service", "/etc/systemd/system/lu-test-vm.service")
    run("systemctl", "daemon-reload")
    check("the VM service starts", lambda: run("systemctl", "enable", "--now", "lu-test-vm.service") is not None)
    check("the VM handed its memory to the agent", lambda: expect(vm_said().get("handed") == "vm-1", vm_said()))
    check("the agent holds vm-1 for root", lambda: (agent_sessions()["vm-1"]["incoming"],
                                                     agent_sessions()["vm-1"]["owner"]) == (False, 0))


def agent_kernel2(check: Checks) -> None:
    said = vm_said()
    check("the VM took its memory back from the agent at boot",
          lambda: expect(said.get("took_back") == "vm-1", said))
    check("every page of the VM's memory is intact",
          lambda: expect((said.get("size"), said.get("damage")) == (1024 * 4096, None), said))
    said = run("journalctl", "-b", "-o", "cat", "-u", "liveupdated.service")
    check("liveupdated took vm-1 over from what systemd carried in its fd store",
          lambda: expect("took over 1 sessions, kept 0" in said, said.splitlines()[-5:]))


def fs_said() -> dict[str, object]:
    return json.loads((OUT / "fs-service.json").read_text())


FS_UNITS = ("srv-lufs.mount", "lu-test-fs.service")


def fs_kernel1(check: Checks) -> None:
    for unit in FS_UNITS:
        shutil.copy(HERE / unit, f"/etc/systemd/system/{unit}")
    run("systemctl", "daemon-reload")
    check("the service starts on its liveupdatefs instance",
          lambda: run("systemctl", "enable", "--now", "lu-test-fs.service") is not None)
    check("it sees the instance of session lu-test-fs as its state directory",
          lambda: expect(fs_said().get("mount") == ["liveupdatefs", "lu-test-fs"], fs_said()))
    check("it found no state and wrote its own", lambda: expect(fs_said().get("found") is False, fs_said()))


def fs_kernel2(check: Checks) -> None:
    # systemctl kexec stopped the service and unmounted the instance; the
    # reboot notifier carried it; at boot the mount unit took it over.
    said = fs_said()
    check("the service found its state after systemctl kexec",
          lambda: expect((said.get("found"), said.get("size"), said.get("damage")) == (True, 64 * 4096, None), said))
    check("on the instance taken over", lambda: expect(said.get("mount") == ["liveupdatefs", "lu-test-fs"], said))
    check("liveupdate fs list shows it",
          lambda: [i["session"] for i in json.loads(run("liveupdate", "fs", "list", "--json"))["instances"]]
          == ["lu-test-fs"])
    # (liveupdated holds the device here: the kernel log says it instead.)
    check("this boot came through KHO", lambda: "KHO: found kexec handover data" in run("dmesg"))


def main() -> int:
    check = Checks()
    stages = {"fdstore": {1: kernel1, 2: kernel2, 3: kernel3}, "agent": {1: agent_kernel1, 2: agent_kernel2},
              "fs": {1: fs_kernel1, 2: fs_kernel2}}
    for scenario in sys.argv[1].split(","):
        stages[scenario][int(sys.argv[2])](check)
    if check.failed:  # what the agent said, for the failure's cause
        for line in run("journalctl", "-b", "-o", "cat", "-u", "liveupdated.service").splitlines()[-40:]:
            print(f"# liveupdated: {line}", flush=True)
    return check.totals()


if __name__ == "__main__":
    sys.exit(main())
