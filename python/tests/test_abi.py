"""The Python layouts and ioctl numbers equal the C header's, and ours equal mainline's."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from liveupdate import abi

OUR_HEADER = Path(__file__).resolve().parents[2] / "kernel/include/uapi/linux/liveupdate.h"


def c_layout(
    header: Path, tmp_path: Path, names: list[str] | None = None
) -> dict[str, tuple[int, int, dict[str, int]]]:
    """Compile a program against ``header`` and read what C says of each command."""
    lines = ["#include <stdio.h>", "#include <stddef.h>", f'#include "{header}"', "int main(void) {"]
    for name in names or list(abi.COMMANDS):
        fields = abi.COMMANDS[name][2]
        st = f"struct {abi.STRUCTS[name]}"
        offsets = " ".join(f"{f}=%zu" for f in fields)
        args = ", ".join(f"offsetof({st}, {f})" for f in fields)
        lines.append(f'printf("{name} %lu %zu {offsets}\\n", (unsigned long){name}, sizeof({st}), {args});')
    lines += ["return 0; }"]
    src = tmp_path / "layout.c"
    src.write_text("\n".join(lines))
    exe = tmp_path / "layout"
    subprocess.run(["cc", "-o", str(exe), str(src)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    result = {}
    for line in out.splitlines():
        name, number, size, *fields = line.split()
        result[name] = (int(number), int(size), {k: int(v) for k, v in (f.split("=") for f in fields)})
    return result


def test_python_matches_our_header(tmp_path: Path) -> None:
    c = c_layout(OUR_HEADER, tmp_path)
    assert set(c) == set(abi.COMMANDS)
    for name, (number, layout, fields) in abi.COMMANDS.items():
        assert c[name] == (number, layout.size, fields), name


def test_our_header_matches_mainline(tmp_path: Path) -> None:
    ksrc = os.environ.get("LU_KSRC")
    if not ksrc:
        pytest.skip("LU_KSRC (a Linux 7.2 source tree) is not set")
    mainline = Path(ksrc) / "include/uapi/linux/liveupdate.h"
    assert mainline.exists(), mainline
    ours = tmp_path / "ours"
    theirs = tmp_path / "theirs"
    ours.mkdir()
    theirs.mkdir()
    assert c_layout(OUR_HEADER, ours, abi.MAINLINE_COMMANDS) == c_layout(mainline, theirs, abi.MAINLINE_COMMANDS)


def test_enums_match_our_header(tmp_path: Path) -> None:
    names = [f"LIVEUPDATE_STATE_{s.name}" for s in abi.State] + [f"LIVEUPDATE_EVENT_{e.name}" for e in abi.Event]
    values = [int(s) for s in abi.State] + [int(e) for e in abi.Event]
    names.append("LIVEUPDATE_STATE_KHO_BOOT")
    values.append(abi.STATE_KHO_BOOT)
    src = tmp_path / "enums.c"
    body = " ".join(f'printf("%ld\\n", (long){n});' for n in names)
    src.write_text(f'#include <stdio.h>\n#include "{OUR_HEADER}"\nint main(void) {{ {body} return 0; }}\n')
    exe = tmp_path / "enums"
    subprocess.run(["cc", "-o", str(exe), str(src)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.split()
    assert [int(v) for v in out] == values


def test_io_matches_kernel_macro() -> None:
    # _IO(0xBA, 0x40) as computed by the kernel: type << 8 | nr, no size or direction.
    assert abi.SESSION_PRESERVE_FD == 0xBA40
    assert abi.IOCTL_CREATE_SESSION == 0xBA00


def test_fs_tree_token_matches_our_header(tmp_path: Path) -> None:
    src = tmp_path / "token.c"
    src.write_text(f'#include <stdio.h>\n#include "{OUR_HEADER}"\n'
                   'int main(void) { printf("%llu\\n", (unsigned long long)LIVEUPDATE_FS_TREE_TOKEN); return 0; }\n')
    subprocess.run(["cc", "-o", str(tmp_path / "token"), str(src)], check=True)
    out = subprocess.run([str(tmp_path / "token")], check=True, capture_output=True, text=True).stdout
    assert int(out) == abi.FS_TREE_TOKEN
