"""Progress on a terminal: rows read by the running component, from its open input files' offsets."""
from __future__ import annotations

import io
import time

from pipeline import progress
from tests_support import write_sample


def test_rows_read_follow_the_open_files_offsets_across_passes(tmp_path):
    csv = write_sample(tmp_path / "data" / "data.csv", rows=3000)
    lines = csv.read_text().count("\n")
    tracker = progress.ReadProgress([tmp_path / "data"])
    with open(csv, "rb", buffering=0) as f:  # unbuffered: the offset is what was read
        f.read(csv.stat().st_size // 2)
        rows, nbytes = tracker.update()
        assert nbytes == csv.stat().st_size // 2
        assert 0.4 * lines < rows < 0.6 * lines  # estimated from the first 256 KiB's rows per byte
        f.read()
        assert tracker.update()[1] == csv.stat().st_size
    with open(csv, "rb", buffering=0) as f:  # a second pass (Transform reads its data twice)
        f.read(1000)
        rows, nbytes = tracker.update()
    assert nbytes == csv.stat().st_size + 1000
    assert tracker.update()[1] == 2 * csv.stat().st_size  # closed: counted as read to its end
    # A file being written is an output, not progress.
    with open(tmp_path / "data" / "out.csv", "w") as out:
        out.write("x\n" * 1000)
        assert tracker.update()[1] == 2 * csv.stat().st_size


def test_gzipped_tfrecords_count_their_records(tmp_path):
    import tensorflow as tf

    folder = tmp_path / "Split-train"
    folder.mkdir()
    path = folder / "data.gz"
    with tf.io.TFRecordWriter(str(path), options="GZIP") as writer:
        for i in range(20000):
            writer.write(tf.train.Example(features=tf.train.Features(feature={
                "x": tf.train.Feature(float_list=tf.train.FloatList(value=[i * 0.37]))})).SerializeToString())
    density = progress.rows_per_byte(str(path))
    assert 0.8 * 20000 < density * path.stat().st_size < 1.2 * 20000


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_ticker_writes_rows_and_rate_to_the_terminal_only(tmp_path):
    csv = write_sample(tmp_path / "data" / "data.csv", rows=2000)
    terminal = _Terminal()
    ticker = progress.Ticker(terminal, "CsvExampleGen", [tmp_path / "data"], every_s=0.05).start()
    with open(csv, "rb", buffering=0) as f:  # unbuffered: the offset is what was read
        f.read(csv.stat().st_size // 2)
        time.sleep(0.5)
    ticker.stop()
    text = terminal.getvalue()
    assert "CsvExampleGen" in text and "rows read" in text and "rows/s" in text
    assert text.endswith("\r\033[K")  # the line is cleared for the component's own finished line
