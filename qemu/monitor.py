"""Where a hung guest's CPUs are: QEMU's human monitor and the kernel's System.map.

run.py gives QEMU a monitor on a Unix socket; when the guest stops talking
(a kernel that never comes back from kexec), `where()` asks for every CPU's
registers and names the kernel function each instruction pointer is in, so
a hang leaves a clue instead of only a timeout.
"""

from __future__ import annotations

import bisect
import re
import socket
import time
from pathlib import Path

PROMPT = b"(qemu) "
RIP_RE = re.compile(r"^[RE]IP=([0-9a-f]+)", re.MULTILINE)  # EIP: a CPU in 32-bit mode
CPU_RE = re.compile(r"^CPU#(\d+)", re.MULTILINE)
STACK_WORDS = 64
STACK_WORD_RE = re.compile(r"\b0x([0-9a-f]{16})\b")
# Floating point and vector registers say nothing about a hang.
VECTOR_REGISTERS = ("FCW", "FPR", "XMM", "YMM", "ZMM", "Opmask")


def ask(path: Path, commands: list[str], timeout: float = 10.0) -> list[str]:
    """The monitor's answers to commands sent in one session (empty if it does not answer)."""
    answers = []
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            read_until_prompt(sock, time.monotonic() + timeout)
            for command in commands:
                sock.sendall(command.encode() + b"\n")
                answer = read_until_prompt(sock, time.monotonic() + timeout)
                # The monitor echoes the command line (with terminal escapes) first.
                text = answer.decode(errors="replace").replace("\r", "")
                answers.append(text.split("\n", 1)[1] if "\n" in text else "")
    except OSError:
        pass
    return answers + [""] * (len(commands) - len(answers))


def read_until_prompt(sock: socket.socket, deadline: float) -> bytes:
    data = b""
    while not data.endswith(PROMPT) and time.monotonic() < deadline:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data[: -len(PROMPT)] if data.endswith(PROMPT) else data


class SymbolMap:
    """Kernel text symbols from System.map (the test kernels have no KASLR)."""

    def __init__(self, path: Path) -> None:
        self.addresses: list[int] = []
        self.names: list[str] = []
        self.end = 0
        if not path.exists():
            return
        for line in path.read_text().splitlines():
            address, kind, name = line.split(maxsplit=2)
            if name == "_etext":
                self.end = int(address, 16)
            elif kind in "tTwW":
                self.addresses.append(int(address, 16))
                self.names.append(name)

    def in_text(self, address: int) -> bool:
        return bool(self.addresses) and self.addresses[0] <= address < self.end

    def name(self, address: int) -> str:
        if not self.in_text(address):
            return "outside the kernel's text (purgatory or early boot code?)"
        at = bisect.bisect_right(self.addresses, address) - 1
        return f"{self.names[at]}+{address - self.addresses[at]:#x}"


def where(path: Path, symbols: SymbolMap) -> str:
    """Each CPU's function, the kernel text addresses on its stack, its registers."""
    registers = ask(path, ["info registers -a"])[0]
    if not registers:
        return "the monitor did not answer"
    cpus = CPU_RE.findall(registers) or ["0"]
    commands = [c for cpu in cpus for c in (f"cpu {cpu}", f"x/{STACK_WORDS}gx $sp")]
    stacks = ask(path, commands)[1::2]
    lines = []
    for cpu, rip, stack in zip(cpus, RIP_RE.findall(registers), stacks, strict=False):
        lines.append(f"CPU {cpu}: RIP {rip} in {symbols.name(int(rip, 16))}")
        words = (int(w, 16) for w in STACK_WORD_RE.findall(stack))
        lines += [f"  stack: {symbols.name(w)}" for w in words if symbols.in_text(w)]
    general = [line for line in registers.splitlines() if not line.startswith(VECTOR_REGISTERS)]
    return "\n".join([*lines, *general]).rstrip()
