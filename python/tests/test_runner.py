"""qemu/run.py's verdict: plans state how many tests each stage runs, and
kernel reports on the console fail a run."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(CHECKOUT / "qemu"))  # as when run.py runs: its modules beside it
spec = importlib.util.spec_from_file_location("qemu_run", CHECKOUT / "qemu" / "run.py")
assert spec and spec.loader
runner = importlib.util.module_from_spec(spec)
sys.modules["qemu_run"] = runner
spec.loader.exec_module(runner)


def counts(*lines: str) -> runner.Counts:
    c = runner.Counts()
    for line in lines:
        c.parse(line)
    return c


def test_kselftest_totals() -> None:
    c = counts("# Totals: pass:12 fail:0 xfail:0 xpass:0 skip:0 error:0")
    assert c.check(12) is None
    assert "expects 13" in (c.check(13) or "")


def test_kselftest_skip_fails_the_stage() -> None:
    c = counts("# Totals: pass:11 fail:0 xfail:0 xpass:0 skip:1 error:0")
    assert "skipped" in (c.check(11) or "")


@pytest.mark.parametrize("line, passed, other", [
    ("3 passed, 5 deselected in 4.56s", 3, {}),
    ("==== 2 passed in 0.10s ====", 2, {}),
    ("1 passed, 1 skipped in 2.00s", 1, {"skipped": 1}),
    ("1 failed, 2 passed, 1 warning in 9.1s", 2, {"failed": 1}),
    ("1 error in 0.5s", 0, {"error": 1}),
])
def test_pytest_summaries(line: str, passed: int, other: dict[str, int]) -> None:
    c = counts(line)
    assert (c.passed, c.other) == (passed, other)


def test_two_runners_in_one_stage_add_up() -> None:
    c = counts("# Totals: pass:2 fail:0 xfail:0 xpass:0 skip:0 error:0", "4 passed in 1.0s")
    assert c.check(6) is None


def test_no_output_is_zero_tests() -> None:
    assert "0 tests passed" in (counts().check(1) or "")


def test_parse_plan() -> None:
    assert runner.parse_plan("[3] a b\n\nplain command\n[1 manual-load] c\n") == [
        (3, "a b"), (None, "plain command"), (1, "#manual-load c")]


def test_plan_comments_and_memory() -> None:
    text = "# 100,000 files\n# guest memory: 6G\n[1] a\n"
    assert runner.parse_plan(text) == [(1, "a")]
    assert runner.plan_memory(text) == "6G"
    assert runner.plan_memory("[1] a\n") is None
    assert runner.plan_guest("# guest kernel: lean\n[1] a\n") == "lean"
    assert runner.plan_guest("# guest: systemd\n[1] a\n") == "systemd"
    assert runner.plan_guest(text) is None


@pytest.mark.parametrize("plan", sorted((CHECKOUT / "selftests" / "plans").glob("*.plan")),
                         ids=lambda p: p.name)
def test_every_test_plan_states_its_counts(plan: Path) -> None:
    for expected, command in runner.parse_plan(plan.read_text()):
        assert expected is not None and expected > 0, f"{plan.name}: {command[:60]}"


@pytest.mark.parametrize("line", [
    "[   12.3] WARNING: CPU: 0 PID: 1 at kernel/foo.c:1 bar+0x1/0x2",
    "[   12.3] BUG: KASAN: slab-use-after-free in lu_x+0x1/0x2",
    "[   12.3] BUG: KFENCE: out-of-bounds read in y",
    "[   12.3] INFO: task python3:123 blocked for more than 60 seconds.",
    "[   12.3] watchdog: BUG: soft lockup - CPU#0 stuck for 22s!",
    "[   12.3] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:",
    "LU-GUEST kmemleak: unreferenced object 0xffff888 (size 64):",
])
def test_kernel_reports_are_fatal(line: str) -> None:
    assert runner.FATAL_RE.search(line)


@pytest.mark.parametrize("source", sorted((CHECKOUT / "selftests").glob("*_test.c")), ids=lambda p: p.name)
def test_every_kselftest_gets_the_guest_time_limit(source: Path) -> None:
    """The harness's 30 s default is too short in a loaded TCG guest: main() must be lu_main()'s."""
    text = source.read_text()
    assert "TEST_HARNESS_MAIN" not in text
    assert "return lu_main(argc, argv);" in text or "return lu_staged_main(argc, argv);" in text


def test_symbol_map_names_kernel_text_only(tmp_path: Path) -> None:
    path = tmp_path / "System.map"
    path.write_text("ffffffff81000000 T _text\nffffffff81000100 t do_idle\n"
                    "ffffffff81000200 D some_data\nffffffff81000300 T _etext\n")
    symbols = runner.monitor.SymbolMap(path)
    assert symbols.name(0xFFFFFFFF81000108) == "do_idle+0x8"
    assert "outside" in symbols.name(0xFFFFFFFF81000300)
    assert "outside" in symbols.name(0x1000)


def test_no_next_stage_stops_the_run_and_says_where(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A real QEMU whose CPU never starts (-S) stands for a kernel that hangs after kexec.
    A line printed after the kexec (the old kernel's last words, or the new one's
    first) does not stop the watch: only the next stage's BEGIN does (before, any
    line did, and a guest that hung later ran into the plan's 30-minute limit)."""
    sock = tmp_path / "monitor"
    qemu = runner.subprocess.Popen(
        ["qemu-system-x86_64", "-accel", "tcg", "-S", "-nodefaults", "-display", "none",
         "-chardev", "stdio,id=console,mux=on,signal=off", "-serial", "chardev:console",
         "-monitor", f"unix:{sock},server=on,wait=off"],
        stdin=runner.subprocess.PIPE, stdout=runner.subprocess.PIPE)
    monkeypatch.setattr(runner, "NEXT_STAGE_WITHIN", 2)
    monkeypatch.setattr(runner, "SYSRQ_OUTPUT_WAIT", 0.5)
    start = runner.time.monotonic()
    console = runner.Console(tmp_path / "serial.log", echo=False, start=start)
    console.line("LU-STAGE 1/2 RESULT 0 12.1")
    console.line("LU-KEXEC 12.3")
    console.line("kexec_core: Starting new kernel")
    symbols = runner.monitor.SymbolMap(tmp_path / "no System.map")
    try:
        while not sock.exists():
            runner.time.sleep(0.05)
        console.follow(qemu, start + 60, lambda: runner.monitor.where(sock, symbols))
        assert qemu.wait(timeout=10) != 0
    finally:
        qemu.kill()
        qemu.wait()
    assert runner.time.monotonic() - start < 30
    log = (tmp_path / "serial.log").read_text()
    assert "no next stage 2 s after the last one passed" in log
    assert "tasks (SysRq 8wt)" in log
    assert "CPU 0: RIP 0000fff0 in outside the kernel's text" in log


def test_the_next_stage_and_the_last_result_end_the_watch(tmp_path: Path) -> None:
    console = runner.Console(tmp_path / "serial.log", echo=False, start=runner.time.monotonic())
    console.line("LU-STAGE 1/2 RESULT 0 (liveupdate kexec follows)")
    assert console.next_stage_due is not None
    console.line("LU-STAGE 2/2 BEGIN 20.5")
    assert console.next_stage_due is None
    console.line("LU-STAGE 2/2 RESULT 0 40.0")
    assert console.next_stage_due is None
    console.line("LU-STAGE 1/3 RESULT 1 40.0")
    assert console.next_stage_due is None


def test_stage_env_gives_stage_sh_each_command_unchanged(tmp_path: Path) -> None:
    """stage.sh's own line picks the stage's command out of what run.py writes."""
    plan = ["[ \"$LU_STAGE\" = 1 ] && echo 'one' \\ two", "#manual-load x=$(echo \"a b\") `date` $HOME", "last"]
    env_file = tmp_path / "env"
    env_file.write_text(runner.stage_env({"LU_OUT": "/run/out dir"}, plan))
    stage_sh = (CHECKOUT / "qemu" / "guest" / "stage.sh").read_text()
    pick = next(line for line in stage_sh.splitlines() if line.startswith('eval "cmd='))
    for stage, command in enumerate(plan, 1):
        script = f'. "{env_file}"; stage={stage}; {pick}; printf %s "$cmd"'
        assert subprocess.run(["sh", "-c", script], capture_output=True, text=True,
                              check=True).stdout == command
    script = f'. "{env_file}"; printf "%s|%s" "$LU_STAGES" "$LU_OUT"; env | grep -c ^LU_COMMAND_'
    done = subprocess.run(["sh", "-c", script], capture_output=True, text=True)
    assert done.stdout == "3|/run/out dir0\n"  # the commands are not exported
