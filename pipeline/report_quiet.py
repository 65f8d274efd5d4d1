"""Keeps TensorFlow's import chatter out of `status` and `report` output.

Reading TFMA and TFDV results imports TensorFlow and Beam, which print deprecation warnings, CUDA
probes and absl lines to file descriptor 2 directly (C++), so Python-level filters alone cannot
silence them. While reading, fd 2 points at `<home>/logs/<command>.log` (kept for debugging), and
the terminal shows only our own output and the one-line errors the CLI prints afterwards.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path

from pipeline import stderr_redirect


@contextlib.contextmanager
def quiet(home: Path, command: str):
    log_dir = Path(home) / "logs"
    target = log_dir / f"{command}.log" if log_dir.is_dir() else Path(os.devnull)
    with stderr_redirect.fd2_to(target, truncate=True), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
