"""`die_with_parent`: a child process of a run (a trainer worker, the run's second process, the TF Lite
converter's process) that ends when the process that started it goes away, even by SIGKILL: no orphans
writing into a home or holding its cores."""
from __future__ import annotations

import ctypes
import os
import signal
import threading
import time

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent_pid: int) -> None:
    """Ends this process if the process that started it goes away, even by SIGKILL: no orphans.

    Linux's PDEATHSIG covers the normal case; a watcher thread covers the race where the parent
    died before the signal was armed, and systems without prctl.
    """
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (AttributeError, OSError):
        pass

    def watch():
        while True:
            if os.getppid() != parent_pid:
                os._exit(3)
            time.sleep(1.0)

    if os.getppid() != parent_pid:
        os._exit(3)
    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
