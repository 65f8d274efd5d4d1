"""The local runner's two lanes (pipeline/concurrent_runner.py), on small pipelines of TFX function components
launched by TFX's own launcher: the nodes beside run in a second process at the same time as the others, a node
starts only after its upstream nodes, and a failure is reported by the node that failed, the data's first.

The components are in this module: the second process imports it to find their executors (TFX's decorator
registers each executor class in the function's module)."""

import os
import time
from pathlib import Path

import pytest
from tfx.dsl.component.experimental.annotations import Parameter
from tfx.dsl.component.experimental.decorators import component

from components.errors import BadDataError
from pipeline import concurrent_runner

PATIENCE_S = 180  # how long a node waits for the other lane's node (the second process imports TensorFlow first)


def _wait_for(path: Path, who: str) -> None:
    deadline = time.time() + PATIENCE_S
    while not path.exists():
        if time.time() > deadline:
            raise TimeoutError(f"{who} waited {PATIENCE_S} s for {path.name}: the other lane never ran beside it")
        time.sleep(0.05)


@component
def Mark(folder: Parameter[str], name: Parameter[str]):
    """Leave `<folder>/<name>` with this process's id."""
    Path(folder, name).write_text(str(os.getpid()))


@component
def Meet(folder: Parameter[str], name: Parameter[str], other: Parameter[str]):
    """Mark `name`, then wait until the node `other` has marked too: both must be running at once."""
    Path(folder, name).write_text(str(os.getpid()))
    _wait_for(Path(folder, other), name)
    Path(folder, name + ".done").write_text("")


@component
def Fail(folder: Parameter[str], name: Parameter[str], kind: Parameter[str]):
    """Mark `name` and fail: with bad data (BadDataError) or with a bug (KeyError)."""
    Path(folder, name).write_text(str(os.getpid()))
    if kind == "bad data":
        raise BadDataError("the data does not match the schema: fare < 0")
    raise KeyError("a bug in " + name)


def _pipeline(tmp_path: Path, nodes, edges=(), cache: bool = False):
    """A pipeline of `nodes` (id -> component); `edges`: (before, after) pairs of ids."""
    from tfx.orchestration import metadata
    from tfx.orchestration.pipeline import Pipeline

    built = {node_id: node.with_id(node_id) for node_id, node in nodes.items()}
    for before, after in edges:
        built[after].add_upstream_node(built[before])
    return Pipeline(pipeline_name="lanes", pipeline_root=str(tmp_path / "root"), components=list(built.values()),
                    enable_cache=cache,
                    metadata_connection_config=metadata.sqlite_metadata_connection_config(str(tmp_path / "mlmd.db")))


def _pid(folder: Path, name: str) -> int:
    return int((folder / name).read_text())


@pytest.fixture
def marks(tmp_path) -> Path:
    """Where the nodes leave their marks."""
    folder = tmp_path / "marks"
    folder.mkdir()
    return folder


def test_the_nodes_beside_run_in_a_second_process_at_the_same_time(tmp_path, marks):
    m = str(marks)
    nodes = {
        "Source": Mark(folder=m, name="Source"),
        "Model": Meet(folder=m, name="Model", other="Check"),  # waits until Check runs: deadlock if one at a time
        "Check": Meet(folder=m, name="Check", other="Model"),
        "Train": Mark(folder=m, name="Train"),
    }
    edges = [("Source", "Model"), ("Source", "Check"), ("Model", "Train"), ("Check", "Train")]
    concurrent_runner.run(lambda: _pipeline(tmp_path, nodes, edges), beside={"Check"}, log_file=tmp_path / "run.log")

    assert all((marks / name).exists() for name in ("Source", "Model.done", "Check.done", "Train"))
    here = os.getpid()
    assert _pid(marks, "Source") == _pid(marks, "Model") == _pid(marks, "Train") == here
    assert _pid(marks, "Check") != here  # the second process
    # The Trainer-like node started after both: its mark is newer than both done marks.
    train = (marks / "Train").stat().st_mtime_ns
    assert train >= (marks / "Model.done").stat().st_mtime_ns and train >= (marks / "Check.done").stat().st_mtime_ns
    log = (tmp_path / "run.log").read_text()
    assert "[beside]" in log  # the second process's log lines are in the run's log


def test_bad_data_beside_is_the_runs_error_and_nothing_after_it_runs(tmp_path, marks):
    m = str(marks)
    nodes = {
        "Source": Mark(folder=m, name="Source"),
        "Transform": Fail(folder=m, name="Transform", kind="bug"),  # what bad data may do to a node beside it
        "Gate": Fail(folder=m, name="Gate", kind="bad data"),
        "Train": Mark(folder=m, name="Train"),
    }
    edges = [("Source", "Transform"), ("Source", "Gate"), ("Transform", "Train"), ("Gate", "Train")]
    with pytest.raises(concurrent_runner.NodeFailed) as failed:
        concurrent_runner.run(lambda: _pipeline(tmp_path, nodes, edges), beside={"Gate"})
    assert failed.value.node == "Gate"
    assert isinstance(failed.value.__cause__, BadDataError) and "fare < 0" in str(failed.value.__cause__)
    assert (marks / "Transform").exists() and (marks / "Gate").exists()  # the gate ran although Transform failed
    assert not (marks / "Train").exists()


def test_a_bug_beside_names_the_node_and_stops_what_comes_after(tmp_path, marks):
    m = str(marks)
    nodes = {
        "Source": Mark(folder=m, name="Source"),
        "Check": Fail(folder=m, name="Check", kind="bug"),
        "Train": Mark(folder=m, name="Train"),
    }
    with pytest.raises(concurrent_runner.NodeFailed) as failed:
        concurrent_runner.run(lambda: _pipeline(tmp_path, nodes, [("Source", "Check"), ("Check", "Train")]),
                              beside={"Check"}, log_file=tmp_path / "run.log")
    assert failed.value.node == "Check"
    cause = failed.value.__cause__
    assert isinstance(cause, concurrent_runner.SideNodeError) and "KeyError" in str(cause) and "a bug in Check" in str(cause)
    assert not (marks / "Train").exists()
    assert "Traceback" in (tmp_path / "run.log").read_text()  # the second process's trace, in the run's log


def test_a_rerun_takes_the_nodes_beside_from_mlmds_cache_and_says_so(tmp_path, marks, caplog):
    nodes = {"Source": Mark(folder=str(marks), name="Source"), "Check": Mark(folder=str(marks), name="Check")}
    build = lambda: _pipeline(tmp_path, nodes, [("Source", "Check")], cache=True)  # noqa: E731
    concurrent_runner.run(build, beside={"Check"})
    (marks / "Check").unlink()
    with caplog.at_level("INFO"):
        concurrent_runner.run(build, beside={"Check"})
    assert not (marks / "Check").exists()  # not run again
    assert any(r.getMessage() == f"{concurrent_runner.CACHED_PREFIX} of Check is used." for r in caplog.records)


@component
def Sleep(folder: Parameter[str], name: Parameter[str]):
    """Mark `name` and sleep: a node still running when its run is killed."""
    Path(folder, name).write_text(str(os.getpid()))
    time.sleep(PATIENCE_S)


def test_a_run_killed_with_sigkill_leaves_no_second_process(tmp_path, marks):
    """`kill -9` of a run's process ends its second process too (PDEATHSIG): nothing goes on writing to its home."""
    import signal
    import subprocess
    import sys

    script = (
        "import sys; sys.path[:0] = {paths!r}\n"
        "from pathlib import Path\n"
        "import test_concurrent_runner as t\n"
        "from pipeline import concurrent_runner\n"
        "m = {marks!r}\n"
        "nodes = {{'Model': t.Sleep(folder=m, name='Model'), 'Check': t.Sleep(folder=m, name='Check')}}\n"
        "concurrent_runner.run(lambda: t._pipeline(Path({tmp!r}), nodes), beside={{'Check'}})\n"
    ).format(paths=sys.path, marks=str(marks), tmp=str(tmp_path))
    run = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(marks / "Check", "the test")
        _wait_for(marks / "Model", "the test")
        side = _pid(marks, "Check")
        assert side != run.pid
        os.kill(run.pid, signal.SIGKILL)
        run.wait()
        deadline = time.time() + 30
        while time.time() < deadline and _alive(side):
            time.sleep(0.1)
        assert not _alive(side), "the second process outlived its run"
    finally:
        if run.poll() is None:
            run.kill()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False
