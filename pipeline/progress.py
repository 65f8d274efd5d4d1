"""Live progress of a long component on a terminal: how far it has read its input, in rows and rows/s.

TFX's components (CsvExampleGen, StatisticsGen, Transform, the Evaluator) run their Beam jobs in this
process or its child processes (the DirectRunner's modes), and they read their input files
sequentially. So the progress is read from outside them, the way `pv` or `progress(1)` do: the
read offsets of the data files the run's processes hold open (`/proc/<pid>/fdinfo`). A file that
was open and is closed again counts as read to its end; a file opened again starts another pass
(Transform reads its data twice: analyze, then transform). Bytes become rows by the rows per byte
of each file's first 256 KiB (CSV lines; TFRecords, gzipped or not), hence "~".

Nothing is counted inside the components, so it costs them nothing; it shows nothing for work done
elsewhere (a portable runner's workers on another machine). Only terminals get it (`local_runner`
writes it with a carriage return); the log file never does.
"""
from __future__ import annotations

import os
import struct
import threading
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Tuple

from trainer_module import records

SAMPLE_BYTES = 256 * 1024


def _pids() -> List[int]:
    """This process and its descendants (Beam's multi-process workers, trainer workers)."""
    pids = [os.getpid()]
    try:
        import psutil

        pids += [p.pid for p in psutil.Process().children(recursive=True)]
    except Exception:  # noqa: BLE001  (no psutil, or a child gone meanwhile: this process alone)
        pass
    return pids


def open_reads(roots: Iterable[str], pids: Optional[List[int]] = None) -> Dict[Tuple[int, int], Tuple[str, int]]:
    """(pid, fd) -> (path, offset) of the data files under `roots` open for reading in `pids`."""
    roots = tuple(str(r).rstrip("/") + "/" for r in roots)
    found = {}
    for pid in pids if pids is not None else _pids():
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                path = os.readlink(f"/proc/{pid}/fd/{fd}")
                if not path.startswith(roots) or not _is_data(path):
                    continue
                with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                    info = dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)
                if int(info.get("flags", "0").strip(), 8) & 0o3:  # O_WRONLY / O_RDWR: an output being written
                    continue
                found[(pid, int(fd))] = (path, int(info["pos"].strip()))
            except (OSError, KeyError, ValueError):
                continue
    return found


def _is_data(path: str) -> bool:
    name = os.path.basename(path)
    return name.endswith(".csv") or (f"/{records.SPLIT_PREFIX}" in path and not name.endswith((".pb", ".json", ".pbtxt")))


def rows_per_byte(path: str) -> float:
    """Rows per (on-disk) byte, from the file's first SAMPLE_BYTES: CSV lines, or whole TFRecords."""
    try:
        with open(path, "rb") as f:
            head = f.read(SAMPLE_BYTES)
    except OSError:
        return 0.0
    if not head:
        return 0.0
    if path.endswith(".csv"):
        return head.count(b"\n") / len(head)
    data = _partial_gunzip(head) if path.endswith(".gz") else head
    records, offset = 0, 0
    while offset + 8 <= len(data):  # TFRecord: uint64 length, uint32 crc, data, uint32 crc
        (length,) = struct.unpack("<Q", data[offset:offset + 8])
        offset += 16 + length
        if offset > len(data):
            break
        records += 1
    return records / len(head)


def _partial_gunzip(head: bytes) -> bytes:
    """What the start of a gzip stream decompresses to (the stream may be cut anywhere)."""
    import zlib

    try:
        return zlib.decompressobj(zlib.MAX_WBITS | 16).decompress(head)
    except zlib.error:
        return b""


class ReadProgress:
    """Accumulates bytes read (and so rows) across samples of the open data files."""

    def __init__(self, roots: Iterable[str], sample: Callable = open_reads):
        self.roots = list(roots)
        self._sample = sample
        self._open: Dict[Tuple[int, int, str], int] = {}  # (pid, fd, path) -> last offset
        self._done_bytes = 0  # of reads finished (file closed, or re-read from the start)
        self._done_rows = 0.0
        self._density: Dict[str, float] = {}
        self.started = time.time()

    def _rows(self, path: str, nbytes: int) -> float:
        if path not in self._density:
            self._density[path] = rows_per_byte(path)
        return self._density[path] * nbytes

    def update(self) -> Tuple[float, int]:
        """(rows read so far, bytes read so far), all passes and files together."""
        now = {(pid, fd, path): pos for (pid, fd), (path, pos) in self._sample(self.roots).items()}
        for key, last in list(self._open.items()):
            pos = now.get(key)
            if pos is None or pos < last:  # closed (read to its end), or rewound: a pass is done
                end = _size(key[2]) if pos is None else last
                self._done_bytes += end
                self._done_rows += self._rows(key[2], end)
                del self._open[key]
        self._open.update(now)
        open_bytes = sum(self._open.values())
        open_rows = sum(self._rows(path, pos) for (_, _, path), pos in self._open.items())
        return self._done_rows + open_rows, self._done_bytes + open_bytes


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


class Ticker:
    """Writes `line(rows, rate)` to a terminal every `every_s` until stopped; silent until rows move."""

    def __init__(self, stream, node: str, roots: Iterable[str], every_s: float = 2.0):
        self.stream, self.node, self.every_s = stream, node, every_s
        self.progress = ReadProgress([r for r in roots if r and Path(r).exists()])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"progress-{node}", daemon=True)
        self.shown = False

    def start(self) -> "Ticker":
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(self.every_s):
            try:
                rows, nbytes = self.progress.update()
            except Exception:  # noqa: BLE001  (progress is a courtesy: never break a run for it)
                continue
            if rows < 1:
                continue
            seconds = max(time.time() - self.progress.started, 1e-9)
            self.stream.write(f"\r  {self.node:<32} running… ~{rows:,.0f} rows read "
                              f"({nbytes / 2**20:,.0f} MiB), {rows / seconds:,.0f} rows/s\033[K")
            self.stream.flush()
            self.shown = True

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self.shown:
            self.stream.write("\r\033[K")
            self.stream.flush()
