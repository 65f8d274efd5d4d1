"""The default data replayed as its 16 quarters (2013Q1 .. 2016Q4), one `taxi-pipeline run` per quarter.

Each quarter's folder is added to the data folder before its run (as new data arrives), window 4,
`--allow-drift` (the company mix really moves between quarters: the drift is reported, not gated),
and one quarter (`--corrupt`, default 2014-07-01) gets text for a third of its fares: the anomaly gate
must refuse it and nothing may be pushed for it; the next quarter goes on. Then the last quarter is run
again from a copy of the home taken before its run, with `--cold-start`: the same data, the same
window, trained from scratch with a cold start's steps, for the warm start's comparison.

Checked and reported per quarter, all read back from ML Metadata and the components' outputs: rows
ingested (against the CSV's), Transform's analyzer-cache reuse, warm start, the first training
stretch's loss, AUC and accuracy on every row of the new quarter, pushed or not, seconds per component.

    python -m bench spans [--corrupt 2014-07-01] [--window 4]

Writes bench/results/spans.json.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results" / "spans.json"


def _run(data: Path, home: Path, window: int, *extra: str) -> dict:
    started = time.time()
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", "--data", str(data), "--home", str(home),
                           "--allow-drift", "--window", str(window), *extra], capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, cwd=REPO)
    return {"returncode": done.returncode, "seconds": round(time.time() - started, 1),
            "stderr": done.stderr.strip().splitlines()[-1:] if done.returncode else []}


def corrupt_fares(path: Path) -> None:
    """A third of the rows of a CSV get the text "n/a" for a fare: the column is no longer a number."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    fare = rows[0].index("fare")
    for i, row in enumerate(rows[1:]):
        if i % 3 == 0:
            row[fare] = "n/a"
    with open(path, "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)


def _view_of_newest_run(home: Path):
    from pipeline import run_view

    return run_view.load(home / "metadata.db", None, home / "pipeline_root")


def _record(view, quarter: str, rows_in_csv: int, run: dict) -> dict:
    training = view.training
    history = None
    from trainer_module.records import HISTORY_FILE

    if view.model_run_uri and (Path(view.model_run_uri) / HISTORY_FILE).exists():
        history = json.loads((Path(view.model_run_uri) / HISTORY_FILE).read_text())
    return {
        "quarter": quarter,
        "returncode": run["returncode"],
        "seconds": run["seconds"],
        "rows_in_csv": rows_in_csv,
        "rows_ingested": sum(view.rows.values()),
        "gates": {gate: view.state(gate) for gate in ("AnomaliesGate", "DriftCheck")},
        "drifted": [d.feature for d in view.drift.drifted] if view.drift is not None else None,
        "analysis_reuse": view.analysis_reuse,
        "train_rows": training.train_rows if training else None,
        "steps": training.steps if training else None,
        "warm_start": (training.warm_start or {}).get("warm_start") if training else None,
        "first_loss": history["loss"][0] if history else None,
        "auc": view.overall.get("auc"),
        "accuracy": view.overall.get("binary_accuracy"),
        "eval_rows": int(view.overall["example_count"]) if "example_count" in view.overall else None,
        "pushed": view.push.version if view.push is not None else None,
        "component_seconds": {n: round(r.seconds, 1) for n, r in view.nodes.items() if r.seconds is not None},
        "error": run["stderr"],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench spans", description=__doc__.splitlines()[0])
    parser.add_argument("--corrupt", default="2014-07-01", help="the quarter whose fares are made text")
    parser.add_argument("--window", type=int, default=4)
    args = parser.parse_args(argv)

    from pipeline import make_spans
    from pipeline.configs import default_data_root

    work = Path(tempfile.mkdtemp(prefix="bench-spans-"))
    quarters, data, home = work / "quarters", work / "data", work / "home"
    counts = make_spans.split(default_data_root() / "data.csv", quarters, "quarter", make_spans.DEFAULT_COLUMN)
    data.mkdir()
    records = []
    names = sorted(counts)
    for quarter in names:
        if quarter == names[-1]:
            shutil.copytree(home, work / "home-before-last")
            shutil.copytree(data, work / "data-before-last")
        shutil.copytree(quarters / quarter, data / quarter)
        if quarter == args.corrupt:
            corrupt_fares(data / quarter / "data.csv")
        run = _run(data, home, args.window)
        records.append(_record(_view_of_newest_run(home), quarter, counts[quarter], run))
        r = records[-1]
        print(f"{quarter}  exit {r['returncode']}  {r['seconds']:6.1f} s  rows {r['rows_ingested']}/{r['rows_in_csv']}  "
              f"AUC {r['auc'] or 0:.4f}  warm {r['warm_start']}  cache {r['analysis_reuse']}  pushed {r['pushed']}",
              flush=True)

    # The last quarter again, cold: same window, same data, from scratch.
    cold_home = work / "home-before-last"
    shutil.copytree(quarters / names[-1], work / "data-before-last" / names[-1])
    cold_run = _run(work / "data-before-last", cold_home, args.window, "--cold-start")
    cold = _record(_view_of_newest_run(cold_home), names[-1], counts[names[-1]], cold_run)
    warm = records[-1]

    corrupt = next(r for r in records if r["quarter"] == args.corrupt)
    pushed = [r for r in records if r["pushed"]]
    checks = {
        "every run ingested exactly its quarter's rows": all(r["rows_ingested"] == r["rows_in_csv"] for r in records),
        "every judged run evaluated every row of its quarter":
            all(r["eval_rows"] == r["rows_in_csv"] for r in records[1:] if r["eval_rows"] is not None),
        "the corrupt quarter was refused, nothing pushed":
            corrupt["gates"]["AnomaliesGate"] == "FAILED" and corrupt["pushed"] is None and corrupt["returncode"] == 2,
        "the quarter after it ran": records[names.index(args.corrupt) + 1]["returncode"] in (0, 1),
        "runs after the first reused analysis": all(r["analysis_reuse"] and not r["analysis_reuse"].startswith("reused 0")
                                                   for r in records[2:] if r["quarter"] != args.corrupt),
        "pushed models have AUC >= 0.90 on their newest quarter": all(r["auc"] >= 0.90 for r in pushed),
        "warm start's first loss below 0.8x the cold start's": warm["first_loss"] < 0.8 * cold["first_loss"],
    }
    result = {"date": time.strftime("%Y-%m-%d"), "window": args.window, "corrupt": args.corrupt,
              "runs": records, "cold_last": cold, "checks": checks}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1))
    print(f"last quarter, warm vs cold: first loss {warm['first_loss']:.4f} vs {cold['first_loss']:.4f}, "
          f"steps {warm['steps']} vs {cold['steps']}, AUC {warm['auc']:.4f} vs {cold['auc']:.4f}, "
          f"Trainer {warm['component_seconds'].get('Trainer')} s vs {cold['component_seconds'].get('Trainer')} s")
    for check, ok in checks.items():
        print(f"  {'ok  ' if ok else 'FAIL'} {check}")
    print(f"results: {RESULTS}  (work folder {work})")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
