"""One run at a time per home (pipeline/home_lock.py): a second `run` exits 2 naming the first, or waits;
a killed run leaves no lock behind."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline import home_lock
from pipeline.cli import main

REPO = Path(__file__).resolve().parents[1]
HOLDER = """
import sys, time
from pathlib import Path
from pipeline import home_lock
with home_lock.hold(Path(sys.argv[1])):
    print("holding", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _holder(home: Path, seconds: float) -> subprocess.Popen:
    """Another process holding the home, as a run does for its whole length."""
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(home), str(seconds)], cwd=REPO,
                               stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert process.stdout.readline().strip() == "holding"
    return process


def test_a_second_run_on_the_same_home_exits_2_naming_the_first(tmp_path, taxi_sample_dir, capsys):
    home = tmp_path / "home"
    holder = _holder(home, 60)
    try:
        started = time.monotonic()
        assert main(["run", "--home", str(home), "--data", str(taxi_sample_dir)]) == 2
        assert time.monotonic() - started < 30  # before any component ran
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and f"run pid {holder.pid} started" in err and "--wait" in err, err
        assert not (home / "metadata.db").exists(), "the second run touched nothing"
    finally:
        holder.kill()
        holder.wait()


def test_wait_gets_the_home_when_the_first_run_ends(tmp_path):
    holder = _holder(tmp_path, 1.5)
    started = time.monotonic()
    with home_lock.hold(tmp_path, wait_s=30, poll_s=0.1):
        assert time.monotonic() - started >= 1.0
    holder.wait()


def test_a_killed_run_leaves_no_lock(tmp_path):
    holder = _holder(tmp_path, 60)
    with pytest.raises(home_lock.HomeBusyError):
        with home_lock.hold(tmp_path):
            pass
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    with home_lock.hold(tmp_path):  # the kernel dropped the dead run's flock
        assert (tmp_path / home_lock.LOCK_NAME).exists()
