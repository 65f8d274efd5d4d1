"""Data that breaks the schema stops the pipeline at the AnomaliesGate (exit 2: bad input): nothing is
trained or pushed. A component that crashes for any other reason is a failure of ours (exit 1).

The gate runs in the run's second process, beside Transform (pipeline/concurrent_runner.py): Transform may
analyse the bad data meanwhile, and the run still reports the gate's refusal."""
from __future__ import annotations

import csv

from pipeline import configs
from pipeline.cli import main


def _run_cli(capsys, home, data):
    code = main(["run", "--home", str(home), "--data", str(data), "--train-steps", "10", "--eval-steps", "1"])
    return code, capsys.readouterr().err.strip().splitlines()


def test_schema_drift_stops_before_training(tmp_path, capsys):
    from tests_support import write_sample

    clean = write_sample(tmp_path / "clean.csv", rows=600)
    data = tmp_path / "data"
    data.mkdir()
    with open(clean, newline="") as src, open(data / "drifted.csv", "w", newline="") as dst:
        reader = csv.DictReader(src)
        writer = csv.DictWriter(dst, reader.fieldnames)
        writer.writeheader()
        for i, row in enumerate(reader):
            if i % 3 == 0:
                row["payment_type"] = "Crypto"  # a new, frequent value outside the curated domain
            if i % 10 == 0:
                row["trip_start_hour"] = "27"  # out of the 0-23 range
            writer.writerow(row)

    config = configs.PipelineConfig(home=tmp_path / "home", data_root=data)
    code, err = _run_cli(capsys, config.home, data)
    assert code == 2 and len(err) == 1, err
    message = err[0]
    assert message.startswith("error: AnomaliesGate failed: the data does not match the schema"), message
    assert "payment_type" in message and "trip_start_hour" in message and "schema.pbtxt" in message
    assert not list((tmp_path / "home" / "pipeline_root").glob("Trainer*"))
    assert not config.serving_model_dir.exists()


def test_a_component_crash_is_ours_exit_1_with_the_trace(tmp_path, capsys, monkeypatch):
    """A bug inside a component is not bad input: exit 1, the component named, the log's path given."""
    from tests_support import write_sample

    from components import analysis_reuse

    def crash(*_args):
        raise KeyError("a bug in Transform")

    monkeypatch.setattr(analysis_reuse.Executor, "Do", crash)  # Transform runs in the run's own process
    data = tmp_path / "data"
    data.mkdir()
    write_sample(data / "clean.csv", rows=300)
    code, err = _run_cli(capsys, tmp_path / "home", data)
    assert code == 1 and len(err) == 1, err
    assert err[0].startswith("error: Transform failed: KeyError: 'a bug in Transform' (full trace: "), err[0]
    log = err[0].rsplit("(full trace: ", 1)[1].rstrip(")")
    assert "Traceback" in open(log).read()
