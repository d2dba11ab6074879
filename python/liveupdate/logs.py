"""The agent's log: journald priorities under systemd, plain lines elsewhere.

Under systemd, stderr is a stream to journald (JOURNAL_STREAM names it):
each line starts with its syslog priority, ``<4>``, which journald turns
into the entry's PRIORITY (SyslogLevelPrefix=, on by default). Elsewhere,
lines carry the logger's name and the level's name.
"""

from __future__ import annotations

import logging
import os
import sys

# logging's levels as syslog priorities (sd-daemon.h: SD_ERR, SD_WARNING, ...)
_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}


class JournalFormatter(logging.Formatter):
    """``<priority>message``: journald keeps the time and the unit itself."""

    def format(self, record: logging.LogRecord) -> str:
        priority = _PRIORITY.get(record.levelno, 6)
        return "\n".join(f"<{priority}>{line}" for line in super().format(record).splitlines())


def stderr_is_journal() -> bool:
    """Whether stderr is the journald stream systemd gave this service."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return stream == f"{st.st_dev}:{st.st_ino}"


def setup_daemon_logging(level: int = logging.INFO) -> None:
    """Log to stderr, in the form journald or a terminal expects."""
    handler = logging.StreamHandler(sys.stderr)
    if stderr_is_journal():
        handler.setFormatter(JournalFormatter("%(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(name)s: %(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
