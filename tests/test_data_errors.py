"""A bad --data path costs the user one readable line and a non-zero exit, before any component runs."""
from __future__ import annotations

import subprocess
import sys

import pytest

from pipeline import cli


def _run(capsys, *argv):
    code = cli.main(["run", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


def test_missing_folder(capsys, tmp_path):
    code, err = _run(capsys, "--home", str(tmp_path / "home"), "--data", str(tmp_path / "nope"))
    assert code == 2 and len(err) == 1
    assert err[0].startswith("error: --data") and "no such folder" in err[0] and "CSV" in err[0]


def test_empty_folder(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    code, err = _run(capsys, "--home", str(tmp_path / "home"), "--data", str(tmp_path / "empty"))
    assert code == 2 and len(err) == 1 and "empty" in err[0]


def test_a_file_instead_of_a_folder(capsys, tmp_path):
    f = tmp_path / "data.csv"
    f.write_text("a,b\n1,2\n")
    code, err = _run(capsys, "--home", str(tmp_path / "home"), "--data", str(f))
    assert code == 2 and len(err) == 1 and "not a folder" in err[0]


@pytest.mark.parametrize("content", [b"\x89PNG\r\n\x1a\n\x00\x00binary", b"just one line of prose\n", b""])
def test_not_csv(capsys, tmp_path, content):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "file.bin").write_bytes(content)
    code, err = _run(capsys, "--home", str(tmp_path / "home"), "--data", str(tmp_path / "d"))
    assert code == 2 and len(err) == 1 and "not a CSV" in err[0] and "file.bin" in err[0]


def test_csv_without_the_schema_columns(capsys, tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "other.csv").write_text("sepal_length,species\n5.1,setosa\n")
    code, err = _run(capsys, "--home", str(tmp_path / "home"), "--data", str(tmp_path / "d"))
    assert code == 2 and len(err) == 1 and "lacks column(s)" in err[0] and "fare" in err[0]
    assert not (tmp_path / "home" / "metadata.db").exists()  # nothing started


def test_real_console_script_exit_code(tmp_path):
    exe = [sys.executable, "-m", "pipeline.cli", "run", "--home", str(tmp_path), "--data", str(tmp_path / "missing")]
    done = subprocess.run(exe, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and done.stderr.startswith("error: --data")
    assert done.stdout == ""


def test_bad_settings_are_one_line_too(capsys, tmp_path):
    code, err = _run(capsys, "--home", str(tmp_path), "--workers", "0")
    assert code == 2 and err == ["error: workers must be at least 1, not 0"]


def test_unexpected_failure_is_one_line_and_the_trace_goes_to_the_log(capsys, tmp_path, monkeypatch):
    from pipeline import local_runner

    def broken(config, progress=None, log_file=None):
        raise RuntimeError("disk on fire\nsecond line of detail")

    monkeypatch.setattr(local_runner, "run_pipeline", broken)
    data = tmp_path / "d"
    data.mkdir()
    (data / "ok.csv").write_text(",".join(_required_columns()) + "\n" + ",".join("1" * len(_required_columns())) + "\n")
    code, err = _run(capsys, "--home", str(tmp_path / "home"), "--data", str(data))
    assert code == 1 and len(err) == 1 and err[0].startswith("error: RuntimeError: disk on fire (trace: ")
    (log,) = (tmp_path / "home" / "logs").glob("error-*.log")
    assert "second line of detail" in log.read_text() and "Traceback" in log.read_text()


def _required_columns():
    from pipeline.configs import SCHEMA_PATH
    from pipeline.data_check import required_columns

    return required_columns(SCHEMA_PATH)
