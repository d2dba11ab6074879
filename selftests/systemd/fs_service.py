"""A service whose state lives in a liveupdatefs instance (lu-test-fs.service).

Its state directory (argv[1]) is the instance, bound there by systemd
(BindPaths=). Started with nothing there, it writes its state: stamped
pages in a file, in a subdirectory. Started again after the kexec, it
finds them and checks every page. What it found goes to
/run/out/fs-service.json.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

# The tests' stamped pages (file, page index, generation, CRC32 in every page).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "pytest"))
import stamps

FILE_ID = 30
SIZE = 64 * stamps.PAGE


def mounted_at(path: Path) -> tuple[str, str] | None:
    """(filesystem type, source) of the mount at ``path``, as this service sees it."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        if left.split()[4] == str(path):
            fstype, source = right.split()[:2]
            return fstype, source
    return None


def main() -> int:
    state_dir = Path(sys.argv[1])
    state = state_dir / "db" / "state"
    said: dict[str, object] = {"mount": mounted_at(state_dir), "found": state.exists()}
    if state.exists():
        fd = os.open(state, os.O_RDONLY)
        said["size"] = os.fstat(fd).st_size
        said["damage"] = stamps.damage(fd, FILE_ID, 0, SIZE)
        os.close(fd)
    else:
        state.parent.mkdir()
        fd = os.open(state, os.O_CREAT | os.O_WRONLY, 0o600)
        stamps.write(fd, FILE_ID, 0, SIZE)
        os.close(fd)
    Path("/run/out/fs-service.json").write_text(json.dumps(said))
    print(f"fs_service: {json.dumps(said)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
