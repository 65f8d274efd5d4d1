"""Heap memory a component freed goes back to the system when it finishes (glibc)."""
import logging
import platform

import pytest

from pipeline.local_runner import _ProgressHandler


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc_trim")
def test_a_finished_component_gives_freed_heap_back():
    # ~240 MB in 60 KB blocks, which glibc serves from its heap (below its 128 KB mmap threshold), all freed but
    # the last: that one sits at the top of the heap, so free() cannot shrink the heap by itself.
    blocks = [bytearray(60_000) for _ in range(4_000)]
    keep = blocks[-1]
    del blocks
    held = _rss_bytes()
    handler = _ProgressHandler(None)  # the local run's handler of TFX's component log lines
    handler.emit(logging.makeLogRecord({"msg": "Component Transform is running."}))
    assert _rss_bytes() > held - 100_000_000  # only a finished component trims
    handler.emit(logging.makeLogRecord({"msg": "Component Transform is finished."}))
    assert _rss_bytes() < held - 100_000_000, "malloc_trim gave back less than 100 MB of ~240 MB freed"
    assert keep
