"""Our pipeline against TFX's own Chicago taxi example (taxi_pipeline_native_keras), same data, same run.

Both run end to end from a fresh process on the taxi sample in the tfx wheel, each with its own empty
home (no cache). The reference gets the two fixes it needs to run at all on TFX 1.16 (the Beam pin,
already in our environment, and TF_USE_LEGACY_KERAS=1) and is otherwise left as it ships
(BeamDagRunner, multi-processing Beam, 1,000 training steps). Reported: wall time of each and its
ratio, and each Evaluator's own accuracy and AUC on its eval split.

    python -m bench.pipeline_vs_reference [--repeats N]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "pipeline_vs_reference.json"

REFERENCE = """
import os, sys
from tfx.examples.chicago_taxi_pipeline import taxi_pipeline_native_keras as ref
from tfx.orchestration.beam.beam_dag_runner import BeamDagRunner
home = sys.argv[1]
example_dir = os.path.dirname(ref.__file__)  # the example expects a copy under ~/taxi: use the wheel's own
BeamDagRunner().run(ref._create_pipeline(
    pipeline_name="chicago_taxi_native_keras", pipeline_root=os.path.join(home, "pipeline_root"),
    data_root=os.path.join(example_dir, "data", "simple"),
    module_file=os.path.join(example_dir, "taxi_utils_native_keras.py"),
    serving_model_dir=os.path.join(home, "serving"), metadata_path=os.path.join(home, "metadata.db"),
    beam_pipeline_args=ref._beam_pipeline_args))
"""


def _timed(cmd, log: Path) -> float:
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    started = time.perf_counter()
    with open(log, "w") as out:
        done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{cmd[:3]} failed (exit {done.returncode}); see {log}")
    return seconds


def _metrics(home: Path) -> dict:
    from pipeline import run_view

    metrics = run_view.load(home / "metadata.db").overall
    return {"accuracy": metrics.get("binary_accuracy"), "auc": metrics.get("auc")}


def measure_once(workdir: Path) -> dict:
    ours_home, ref_home = workdir / "ours", workdir / "reference"
    ref_home.mkdir(parents=True)
    ours = _timed([sys.executable, "-m", "pipeline.cli", "run", "--home", str(ours_home)], workdir / "ours.log")
    reference = _timed([sys.executable, "-c", REFERENCE, str(ref_home)], workdir / "reference.log")
    return {
        "ours_seconds": round(ours, 1),
        "reference_seconds": round(reference, 1),
        "time_ratio": round(ours / reference, 3),
        "ours": _metrics(ours_home),
        "reference": _metrics(ref_home),
    }


def _fmt(value) -> str:
    """The reference's Evaluator computes accuracy only: its AUC shows as n/a."""
    return "n/a" if value is None else f"{value:.4f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    runs = []
    for i in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
            runs.append(measure_once(Path(tmp)))
        r = runs[-1]
        print(f"run {i + 1}: ours {r['ours_seconds']:.1f} s, reference {r['reference_seconds']:.1f} s, "
              f"ratio {r['time_ratio']:.2f}")
    print(f"{'':<12}{'seconds':>9}{'accuracy':>10}{'AUC':>8}")
    for who, key in (("ours", "ours_seconds"), ("reference", "reference_seconds")):
        m = runs[-1][who]
        print(f"{who:<12}{runs[-1][key]:>9.1f}{_fmt(m['accuracy']):>10}{_fmt(m['auc']):>8}")
    ratios = sorted(r["time_ratio"] for r in runs)
    print(f"time ratio ours/reference (median of {len(runs)}): {ratios[len(ratios) // 2]:.2f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "benchmark": "pipeline_vs_reference", "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "runs": runs,
        "median_time_ratio": ratios[len(ratios) // 2],
    }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
