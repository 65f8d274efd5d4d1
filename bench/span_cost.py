"""What a run that adds one span costs, against a from-scratch run over the same rows (issue 24, acceptance 2).

Data: `--rows` taxi-like rows (bench/scale.py's generator: the default sample drawn with replacement, with
jitter) cut in file order into `--spans` equal spans, `span-1/` .. `span-N/` (TFX's `{SPAN}` layout).

1. The home's history: one `taxi-pipeline run --window W` over span-1 .. span-(N-1), as if they had arrived
   one by one (the CLI runs one pipeline run per span, oldest first). Not timed as the measure.
2. **One span added**: span-N is added to the data folder and `run` is called again. It ingests span-N only,
   Transform reads the analyzer cache of the spans it analysed before, the Trainer warm-starts from the
   serving model, the Evaluator judges the candidate and the serving model on every row of span-N.
3. **From scratch**: an empty home and one plain folder holding the same N spans' CSV files (what
   `taxi-pipeline run` did before spans, and what a user without spans runs): everything ingested,
   analysed and trained cold, judged on its hash split's eval third.

Both measured runs go back to back, from fresh processes; cost is their wall time (and the CPU seconds of
every process of the run: Beam's and the trainer's workers are reaped by the run's process). The table
gives each component's seconds from ML Metadata, so where the cost is stays visible.

    python -m bench span_cost [--rows 1000000] [--spans 10] [--window 9] [--cache DIR]

Writes bench/results/span_cost.json.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from bench import scale

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results" / "span_cost.json"
TARGET = 0.3  # issue 24: a one-span run costs at most this share of a from-scratch run


def cut_into_spans(source: Path, out: Path, spans: int) -> list:
    """`source`'s rows in file order into `out/span-1/data.csv` .. `span-<spans>/`, equal counts; the counts."""
    with open(source) as f:
        header = f.readline()
        rows = sum(1 for _ in f)
    per_span = rows // spans
    counts = []
    with open(source) as f:
        f.readline()
        for k in range(1, spans + 1):
            folder = out / f"span-{k}"
            folder.mkdir(parents=True)
            take = per_span if k < spans else rows - per_span * (spans - 1)
            with open(folder / "data.csv", "w") as g:
                g.write(header)
                g.writelines(itertools.islice(f, take))
            counts.append(take)
    return counts


def run(data: Path, home: Path, log: Path, *extra: str) -> dict:
    """One `taxi-pipeline run` (bench/scale.py's run_once): exit 0, or 1 (a span not blessed, not pushed)."""
    result = scale.run_once(data, home, log, list(extra), accepted=(0, 1))
    return {key: result[key] for key in ("returncode", "wall_seconds", "cpu_seconds", "peak_rss_bytes", "log")}


def newest_run(home: Path) -> dict:
    """What ML Metadata says of the home's newest run: rows, training, evaluation, push, seconds per component."""
    from pipeline import run_view

    view = run_view.load(home / "metadata.db", None, home / "pipeline_root")
    training = view.training
    return {
        "rows_ingested": sum(view.rows.values()),
        "train_rows": training.train_rows if training else None,
        "steps": training.steps if training else None,
        "examples_trained": training.examples if training else None,
        "warm_start": (training.warm_start or {}).get("warm_start") if training else None,
        "analysis_reuse": view.analysis_reuse,
        "eval_rows": int(view.overall["example_count"]) if "example_count" in view.overall else None,
        "auc": view.overall.get("auc"),
        "accuracy": view.overall.get("binary_accuracy"),
        "pushed": view.push.version if view.push is not None else None,
        "component_seconds": {n: round(r.seconds, 1) for n, r in view.nodes.items() if r.seconds is not None},
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench span_cost", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--spans", type=int, default=10)
    parser.add_argument("--window", type=int, default=9, help="spans trained on (default 9: every span before the new one)")
    parser.add_argument("--cache", type=Path, default=REPO / "outputs" / "bench-data", help="generated data, kept")
    parser.add_argument("--work", type=Path, default=None, help="where the homes go (default: a new temporary folder)")
    args = parser.parse_args(argv)

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-span-cost-"))
    spans, data, plain = work / "spans", work / "data", work / "plain"
    counts = cut_into_spans(scale.dataset(args.rows, args.cache) / "data.csv", spans, args.spans)
    data.mkdir()
    plain.mkdir()
    for k in range(1, args.spans + 1):  # hard links: the same files, no copy
        os.link(spans / f"span-{k}" / "data.csv", plain / f"span-{k}.csv")
    for k in range(1, args.spans):
        (data / f"span-{k}").mkdir()
        os.link(spans / f"span-{k}" / "data.csv", data / f"span-{k}" / "data.csv")
    span_args = ("--window", str(args.window), "--allow-drift")

    print(f"history: spans 1..{args.spans - 1} ({sum(counts[:-1]):,} rows), one run each", flush=True)
    try:
        history = run(data, work / "home", work / "history.log", *span_args)
    except RuntimeError as err:
        print(f"the history's runs failed: {err}", file=sys.stderr)
        return 1

    new = data / f"span-{args.spans}"
    new.mkdir()
    os.link(spans / new.name / "data.csv", new / "data.csv")
    print(f"one span added: span-{args.spans} ({counts[-1]:,} rows)", flush=True)
    added = run(data, work / "home", work / "added.log", *span_args)
    added.update(newest_run(work / "home"))
    print(f"  {added['wall_seconds']} s, {added['cpu_seconds']} CPU s, exit {added['returncode']}", flush=True)

    print(f"from scratch: the same {sum(counts):,} rows as one folder, an empty home", flush=True)
    scratch = run(plain, work / "home-scratch", work / "scratch.log")
    scratch.update(newest_run(work / "home-scratch"))
    print(f"  {scratch['wall_seconds']} s, {scratch['cpu_seconds']} CPU s, exit {scratch['returncode']}", flush=True)

    window_rows = sum(counts[-1 - args.window:-1])
    ratio = added["wall_seconds"] / scratch["wall_seconds"]
    checks = {
        "the one-span run ingested exactly the new span's rows": added["rows_ingested"] == counts[-1],
        "it trained on the window's rows": added["train_rows"] == window_rows,
        "it evaluated every row of the new span": added["eval_rows"] == counts[-1],
        "the from-scratch run ingested every row": scratch["rows_ingested"] == sum(counts),
        f"one span costs at most {TARGET}x from scratch (wall)": ratio <= TARGET,
    }
    result = {"date": time.strftime("%Y-%m-%d %H:%M"), "commit": scale.commit(), "rows": args.rows, "spans": counts,
              "window": args.window, "history": history, "added": added, "scratch": scratch,
              "ratio_wall": round(ratio, 3), "ratio_cpu": round(added["cpu_seconds"] / scratch["cpu_seconds"], 3),
              "checks": checks}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1))
    print(f"one span / from scratch: wall {result['ratio_wall']}, CPU {result['ratio_cpu']} (target {TARGET})")
    for name in sorted(set(added["component_seconds"]) | set(scratch["component_seconds"])):
        a, s = added["component_seconds"].get(name), scratch["component_seconds"].get(name)
        if (a or 0) >= 0.5 or (s or 0) >= 0.5:
            print(f"  {name:<20} {a if a is not None else '-':>7} s  {s if s is not None else '-':>7} s")
    for check, ok in checks.items():
        print(f"  {'ok  ' if ok else 'FAIL'} {check}")
    print(f"results: {RESULTS}  (work folder {work})")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
