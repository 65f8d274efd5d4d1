"""One run at a time on a home: two runs would share its ML Metadata store, pipeline root and serving folder.

`hold(home)` takes an exclusive `flock` on `<home>/.run.lock` for the run's whole length. The kernel
drops the lock when the process ends, however it ends (`kill -9` included), so a crashed run never
leaves a lock behind: the file stays, the lock does not. The holder writes who it is into the file
(pid, start time, command) so a second run can say which run it waits for, and exits 2 with that line
unless told to wait (`run --wait SECONDS`), which makes `run` safe to call from cron or a systemd timer.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import time
from pathlib import Path
from typing import Iterator

from pipeline.errors import UserError

LOCK_NAME = ".run.lock"


class HomeBusyError(UserError):
    """Another run holds the home (bad input: exit 2); the message names it."""


def _holder(fd: int) -> str:
    try:
        found = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except ValueError:
        found = {}
    if not found:
        return "another run"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(found.get("started", 0)))
    return f"run pid {found.get('pid')} started {started} ({found.get('command', '?')})"


@contextlib.contextmanager
def hold(home: Path, wait_s: float = 0.0, poll_s: float = 1.0) -> Iterator[Path]:
    """Holds `home` for one run; waits up to `wait_s` for another run to finish, then HomeBusyError."""
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    path = home / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    waited = f" after waiting {wait_s:g} s" if wait_s else ""
                    raise HomeBusyError(f"{home} is in use by {_holder(fd)}{waited}; let it finish, pass "
                                        "--wait SECONDS, or use another --home") from None
                time.sleep(poll_s)
        me = {"pid": os.getpid(), "started": time.time(), "command": " ".join(sys.argv)[:300]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
