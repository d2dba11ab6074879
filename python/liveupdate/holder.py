"""Keeping session fds open until the kexec from a short-lived process.

Closing an outgoing session before the kexec unpreserves its files, so a
process that exits must leave its session fds with someone. Until the
agent exists, ``hold_fds_until_kexec`` forks a child that keeps a copy of
every fd and sleeps until the machine kexecs.
"""

from __future__ import annotations

import os
import signal


def hold_fds_until_kexec() -> int:
    """Fork a holder of this process's fds; returns its pid to the caller."""
    pid = os.fork()
    if pid == 0:
        # The child must never return into the caller's code, whatever
        # signal or exception reaches it: it only holds, then exits.
        try:
            os.setsid()
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            for fd in (0, 1, 2):
                os.close(fd)
            while True:
                signal.pause()
        finally:
            os._exit(0)
    return pid
