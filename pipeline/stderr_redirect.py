"""File descriptor 2 pointed at a file for a while: the one place the CLI hides C++ and Beam chatter.

TensorFlow's runtime, absl and Beam write to fd 2 directly, so Python-level filters cannot silence
them; `run`, `score`, `status` and `report` send them to a log file under `<home>/logs/` instead.
"""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path


@contextlib.contextmanager
def fd2_to(path: Path, truncate: bool = False):
    """Within the block, whatever writes to fd 2 writes to `path` (appended, or from empty with `truncate`)."""
    sys.stderr.flush()
    saved_fd = os.dup(2)
    target_fd = os.open(path, os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if truncate else os.O_APPEND))
    os.dup2(target_fd, 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved_fd, 2)
        os.close(saved_fd)
        os.close(target_fd)
