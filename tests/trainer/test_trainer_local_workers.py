"""The local multi-worker path's failure handling, with real worker processes (toy run_fn): a
worker's error, a worker killed mid-training, a hung worker, and the parent itself stopped - each
fails the Trainer with that cause and never leaves a process behind. (Successful 2-worker training
is tested on the real model in test_trainer_taxi.py and through a TFJob in test_trainer_tfjob.py.)"""
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from trainer_helpers import pid_alive, read_pids
from components.multiworker_trainer.cancellation import TrainingCancelled
from components.multiworker_trainer.local_launcher import WorkerFailedError, WorkersTimedOutError

HERE = Path(__file__).resolve().parent


def _wait_for(predicate, timeout_s, what):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _assert_all_gone(pids, within_s=5.0):
    end = time.monotonic() + within_s
    while time.monotonic() < end and any(pid_alive(p) for p in pids):
        time.sleep(0.1)
    assert not [p for p in pids if pid_alive(p)], f"processes left behind: {pids}"


def test_worker_error_fails_the_trainer_with_that_error(trainer_execution):
    execution = trainer_execution(workers=2, toy_mode="fail", toy_worker=1)
    with pytest.raises(WorkerFailedError) as failure:
        execution.run()
    message = str(failure.value)
    assert message.splitlines()[0] == (
        "trainer worker 1 of 2 failed: ValueError: toy failure on purpose in worker 1 (exited with code 1); "
        f"stopped the other workers; full log: {execution.log_dir / 'trainer-worker-1.log'}")
    assert "last lines of its log:" in message and "Traceback" in message
    assert str(execution.log_dir / "trainer-worker-1.log") in message
    assert failure.value.worker_index == 1
    _assert_all_gone(read_pids(execution.model_run_dir).values(), within_s=0)


def test_worker_killed_mid_training_fails_fast_and_leaves_nothing(trainer_execution):
    timeout_s = 120
    execution = trainer_execution(workers=2, train_steps=2000, toy_step_sleep_s=0.05, worker_timeout_s=timeout_s)
    killed = {}

    def kill_worker_1_once_training():
        marker = execution.model_run_dir / "training-1"
        _wait_for(marker.exists, timeout_s, "worker 1 to start training")
        killed["pid"] = read_pids(execution.model_run_dir)["worker-1"]
        killed["at"] = time.monotonic()
        os.kill(killed["pid"], signal.SIGKILL)

    killer = threading.Thread(target=kill_worker_1_once_training, daemon=True)
    killer.start()
    started = time.monotonic()
    with pytest.raises(WorkerFailedError) as failure:
        execution.run()
    killer.join(5)
    assert "pid" in killed, "the test never killed the worker"
    assert time.monotonic() - killed["at"] < 15, "the trainer did not notice the dead worker promptly"
    assert time.monotonic() - started < timeout_s
    assert str(failure.value).splitlines()[0] == (
        "trainer worker 1 of 2 failed: was killed by SIGKILL; stopped the other workers; "
        f"full log: {execution.log_dir / 'trainer-worker-1.log'}")
    assert not (execution.serving_model_dir / "saved_model.pb").exists()
    _assert_all_gone(read_pids(execution.model_run_dir).values(), within_s=0)


def test_hung_worker_is_stopped_at_the_timeout(trainer_execution):
    execution = trainer_execution(workers=2, toy_mode="hang", toy_worker=1, worker_timeout_s=10)
    started = time.monotonic()
    with pytest.raises(WorkersTimedOutError) as failure:
        execution.run()
    elapsed = time.monotonic() - started
    assert 10 <= elapsed < 10 + 15
    assert "did not finish within 10 s (still running: worker 0, 1)" in str(failure.value)
    _assert_all_gone(read_pids(execution.model_run_dir).values(), within_s=0)


_PARENT = """
import sys
sys.path.insert(0, {here!r})
from trainer_helpers import TrainerExecution
TrainerExecution({root!r}, workers=2, train_steps=5000, toy_step_sleep_s=0.05, worker_timeout_s=300).run()
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_parent_stopped_mid_training_leaves_no_worker(tmp_path, sig):
    root = tmp_path / "run"
    parent = subprocess.Popen([sys.executable, "-c", _PARENT.format(here=str(HERE), root=str(root))],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for(lambda: all((root / "model_run" / f"training-{i}").exists() for i in (0, 1)), 600,
                  "both workers to train")
        pids = list(read_pids(root / "model_run").values())
        assert len(pids) == 2 and all(pid_alive(p) for p in pids)
        parent.send_signal(sig)
        output = parent.communicate(timeout=30)[0].decode(errors="replace")
    finally:
        if parent.poll() is None:
            os.killpg(parent.pid, signal.SIGKILL)
            parent.wait()
    _assert_all_gone(pids, within_s=10)
    if sig == signal.SIGTERM:
        assert parent.returncode != 0
        assert "TrainingCancelled: the trainer was asked to stop (SIGTERM); stopped its local workers" in output
