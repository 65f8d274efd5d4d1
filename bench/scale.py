"""The pipeline at 100k and 1M rows: wall time, per-component time and rows/s, peak memory over every process.

Data: taxi-like CSVs generated deterministically from the default sample (the CSV in the tfx wheel):
rows drawn with replacement by a seeded generator, with jitter on the continuous columns (fare and
tips by the same factor, so the label keeps its meaning; trip miles and seconds; coordinates by a
few metres), categorical and integer columns unchanged, missing values kept missing. Written once
per size to the cache folder (`--cache`, default `outputs/bench-data/`) and reused.

Each size runs `taxi-pipeline run` from a fresh process on an empty home (no cache), then once more
on the same home and unchanged input (the second-run ratio of acceptance 3). While it runs, the
resident memory of the run's process and all its descendants (Beam workers, trainer workers, the
serving check's model server) is summed every 0.25 s; the peak of that sum is reported, overall and
per component (by the component running at the time, from ML Metadata's execution times). Two sums:
RSS, which counts a page shared by several processes (TensorFlow's libraries, mapped by every worker)
once in each, and PSS (the kernel's proportional set size, /proc/PID/smaps_rollup), which splits a shared
page among the processes sharing it: the memory the run takes from the machine.

    python -m bench scale [--rows 100000 1000000] [--cache DIR] [--beam-mode multi_processing] [--no-second-run]

Writes bench/results/scale.json and the table in bench/RESULTS.md (with date and commit).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import List, Optional

from bench import results_md

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results" / "scale.json"
DEFAULT_ROWS = (100_000, 1_000_000)
SEED = 20261201
COMPONENTS = ("CsvExampleGen", "StatisticsGen", "ExampleValidator", "Transform", "Trainer", "Evaluator",
              "ServingValidator", "Pusher")


# ---- data ---------------------------------------------------------------------------------------------

def generate(rows: int, path: Path, seed: int = SEED) -> Path:
    """`rows` taxi-like rows from the default sample with jitter, deterministically (same rows, same bytes)."""
    import numpy as np

    from pipeline.configs import default_data_root

    with open(default_data_root() / "data.csv", newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        source = list(reader)
    col = {name: i for i, name in enumerate(header)}
    rng = np.random.default_rng(seed + rows)
    picks = rng.integers(0, len(source), rows)
    money = rng.normal(1.0, 0.03, rows).clip(0.8, 1.2)  # fare and tips together: the tip ratio holds
    miles = rng.normal(1.0, 0.03, rows).clip(0.8, 1.2)
    seconds = rng.normal(1.0, 0.03, rows).clip(0.8, 1.2)
    place = rng.normal(0.0, 0.0003, (rows, 4))  # ~30 m

    def scaled(value: str, factor: float, digits: int) -> str:
        return value if value == "" else f"{float(value) * factor:.{digits}f}"

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for i, pick in enumerate(picks.tolist()):
            row = list(source[pick])
            row[col["fare"]] = scaled(row[col["fare"]], money[i], 2)
            row[col["tips"]] = scaled(row[col["tips"]], money[i], 2)
            row[col["trip_miles"]] = scaled(row[col["trip_miles"]], miles[i], 2)
            if row[col["trip_seconds"]] != "":
                row[col["trip_seconds"]] = str(int(round(int(row[col["trip_seconds"]]) * seconds[i])))
            for j, name in enumerate(("pickup_latitude", "pickup_longitude", "dropoff_latitude", "dropoff_longitude")):
                if row[col[name]] != "":
                    row[col[name]] = f"{float(row[col[name]]) + place[i, j]:.6f}"
            writer.writerow(row)
    tmp.rename(path)
    return path


def dataset(rows: int, cache: Path) -> Path:
    folder = cache / f"taxi-{rows}"
    if not (folder / "data.csv").exists():
        print(f"generating {rows:,} rows into {folder} (once)")
        generate(rows, folder / "data.csv")
    return folder


# ---- measuring ----------------------------------------------------------------------------------------

PSS_EVERY = 4  # samples: PSS once a second


def _pss_bytes(pid: int) -> int:
    """The kernel's proportional set size of a process (0 where the kernel gives none)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class MemorySampler:
    """Peak of the summed RSS (and PSS) of a process and all its descendants, with the time of each sample; and the
    CPU time the tree has used by then (user + system of the live processes, plus what their exited,
    reaped children used), so a component's CPU seconds are the difference across its time window."""

    def __init__(self, pid: int, every_s: float = 0.25):
        self.pid, self.every_s = pid, every_s
        self.samples: List[tuple] = []  # (time, summed rss bytes, processes, CPU s used by the tree so far, summed pss or None)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self):
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while not self._stop.is_set():
            total, count, cpu = 0, 0, 0.0
            pss = 0 if len(self.samples) % PSS_EVERY == 0 else None  # the kernel walks the page tables: every 4th sample
            try:
                procs = [root] + root.children(recursive=True)
            except psutil.NoSuchProcess:
                break
            for proc in procs:
                try:
                    total += proc.memory_info().rss
                    if pss is not None:
                        pss += _pss_bytes(proc.pid)
                    times = proc.cpu_times()
                    cpu += times.user + times.system + times.children_user + times.children_system
                    count += 1
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            self.samples.append((time.time(), total, count, cpu, pss))
            self._stop.wait(self.every_s)

    def peak(self, start: float = 0.0, end: float = float("inf")) -> Optional[int]:
        values = [rss for t, rss, *_ in self.samples if start <= t <= end]
        return max(values) if values else None

    def peak_pss(self, start: float = 0.0, end: float = float("inf")) -> Optional[int]:
        values = [pss for t, _, _, _, pss in self.samples if start <= t <= end and pss is not None]
        return max(values) if values else None

    def cpu_seconds(self, start: float = 0.0, end: float = float("inf")) -> Optional[float]:
        """CPU seconds the tree used between the first and the last sample inside [start, end]."""
        values = [cpu for t, _, _, cpu, _ in self.samples if start <= t <= end]
        return round(max(values) - min(values), 1) if len(values) > 1 else None


def run_once(data: Path, home: Path, log: Path, extra: List[str], accepted=(0,)) -> dict:
    """One `taxi-pipeline run` under the memory sampler: wall and CPU seconds (every process of the run),
    peak summed RSS/PSS, exit status; an exit not in `accepted` raises (a span not blessed exits 1)."""
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    cmd = [sys.executable, "-m", "pipeline.cli", "run", "--home", str(home), "--data", str(data), *extra]
    started, cpu_before = time.time(), children_cpu_seconds()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=str(REPO))
        with MemorySampler(proc.pid) as memory:
            rc = proc.wait()
    wall = time.time() - started
    if rc not in accepted:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {rc}); see {log}")
    cpu = children_cpu_seconds() - cpu_before  # every process of the run, reaped (Beam, trainer workers...)
    return {"wall_seconds": round(wall, 1), "peak_rss_bytes": memory.peak(), "peak_pss_bytes": memory.peak_pss(),
            "memory": memory, "cmd": cmd, "returncode": rc, "log": str(log),
            "cpu_seconds": round(cpu, 1)}


def children_cpu_seconds() -> float:
    """User + system CPU seconds of this process's reaped children so far."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def components_of(home: Path, memory: MemorySampler, rows: int):
    """Per component: seconds (ML Metadata), input rows/s, and the peak summed RSS while it ran; and the run's view."""
    from pipeline import run_results, run_view

    result = run_results.load_run(home / "metadata.db")
    store = run_results.connect(home / "metadata.db")
    run = store.get_context_by_type_and_name("pipeline_run", result.run_id)
    windows = {}
    for execution in store.get_executions_by_context(run.id):
        windows[run_results._node_id(store, execution)] = (execution.create_time_since_epoch / 1000,
                                                           execution.last_update_time_since_epoch / 1000)
    out = {}
    for name, node in result.nodes.items():
        if name not in COMPONENTS:
            continue
        entry = {"seconds": node.seconds, "state": node.state}
        if node.seconds:
            entry["rows_per_second"] = round(rows / node.seconds)
        if name in windows:
            entry["peak_rss_bytes"] = memory.peak(*windows[name])
            entry["peak_pss_bytes"] = memory.peak_pss(*windows[name])
            entry["cpu_seconds"] = memory.cpu_seconds(*windows[name])
        out[name] = entry
    return out, run_view.of(result)


def measure(rows: int, cache: Path, workdir: Path, extra: List[str], second_run: bool) -> dict:
    data = dataset(rows, cache)
    home = workdir / f"home-{rows}"
    first = run_once(data, home, workdir / f"run-{rows}.log", extra)
    per_component, view = components_of(home, first.pop("memory"), rows)
    record = {
        "rows": rows, "wall_seconds": first["wall_seconds"], "peak_rss_bytes": first["peak_rss_bytes"],
        "peak_pss_bytes": first["peak_pss_bytes"],
        # On N cores no schedule of this work ends sooner than CPU / N: the floor any wall-time goal is against.
        "cpu_seconds": first["cpu_seconds"], "cpu_floor_seconds": round(first["cpu_seconds"] / os.cpu_count(), 1),
        "rows_per_second": round(rows / first["wall_seconds"]), "components": per_component,
        "split_rows": view.rows, "trained_examples": view.training.examples if view.training else None,
        "accuracy": view.overall.get("binary_accuracy"), "auc": view.overall.get("auc"),
        "eval_examples": view.overall.get("example_count"), "pushed": view.push is not None,
        "command": f"taxi-pipeline run --home <fresh home> --data <cache>/taxi-{rows}",
    }
    counted = sum(view.rows.values())
    record["rows_kept"] = counted == rows  # every generated row reached StatisticsGen's counts
    if second_run:
        again = run_once(data, home, workdir / f"run-{rows}-again.log", extra)
        again.pop("memory")
        record["second_run_seconds"] = again["wall_seconds"]
        record["second_run_ratio"] = round(again["wall_seconds"] / first["wall_seconds"], 3)
    return record


# ---- reporting ----------------------------------------------------------------------------------------

def commit() -> str:
    """The checkout's short commit ('unknown' outside git)."""
    try:
        return subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def gib(n: Optional[int]) -> str:
    return "-" if n is None else f"{n / 2**30:.2f}"


def table(results: dict) -> str:
    head = ["rows", "wall s", "CPU s (/ cores)", "rows/s", "peak GiB, RSS / PSS (all procs)", *COMPONENTS[:1], "StatisticsGen", "Transform",
            "Trainer", "Evaluator", "2nd run s (ratio)", "accuracy", "rows kept"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results["runs"]:
        comp = r["components"]

        def cell(name):
            c = comp.get(name, {})
            if not c.get("seconds"):
                return "-"
            cpu = f", {c['cpu_seconds']:.0f} CPU s" if c.get("cpu_seconds") is not None else ""
            return f"{c['seconds']:.1f} s{cpu} ({c.get('rows_per_second', 0):,}/s)"

        second = f"{r['second_run_seconds']:.1f} ({r['second_run_ratio']:.2f}x)" if "second_run_seconds" in r else "-"
        acc = "-" if r.get("accuracy") is None else f"{r['accuracy']:.4f}"
        cpu = f"{r['cpu_seconds']:.0f} ({r['cpu_floor_seconds']:.0f})" if r.get("cpu_seconds") is not None else "-"
        lines.append("| " + " | ".join([f"{r['rows']:,}", f"{r['wall_seconds']:.1f}", cpu, f"{r['rows_per_second']:,}",
                                        f'{gib(r["peak_rss_bytes"])} / {gib(r.get("peak_pss_bytes"))}', cell("CsvExampleGen"), cell("StatisticsGen"),
                                        cell("Transform"), cell("Trainer"), cell("Evaluator"), second, acc,
                                        "yes" if r["rows_kept"] else "NO"]) + " |")
    return "\n".join(lines)


def write_markdown(results: dict) -> None:
    ratio = results.get("time_ratio_1m_100k")
    results_md.write_section("scale", [
        "## Scale (`python -m bench scale`)",
        "",
        f"Measured {results['measured_at']} at commit `{results['commit']}` on {results['machine']['cpus']} cores"
        f" ({results['note']}). Command per size: `{results['runs'][0]['command']}` (fresh home, no cache), then"
        " the same again on unchanged input (2nd run). Component cells: seconds, CPU seconds of every process"
        " while it ran (input rows / s); StatisticsGen runs beside Transform, so their CPU cells overlap. CPU s"
        " (/ cores): the run's CPU time over all its processes, and that divided by the cores: no schedule of the"
        " same work on this machine ends sooner.",
        "",
        table(results),
        "",
        f"time(1M) / time(100k): {ratio if ratio is not None else '-'}",
    ])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=list(DEFAULT_ROWS))
    parser.add_argument("--cache", type=Path, default=REPO / "outputs" / "bench-data")
    parser.add_argument("--no-second-run", action="store_true")
    parser.add_argument("--note", default="", help="a word on the machine's state, kept with the figures")
    parser.add_argument("run_args", nargs="*", help="further `taxi-pipeline run` flags, after --")
    args = parser.parse_args(argv)
    extra = list(args.run_args)  # a fresh home: the first run has no cache; the second uses it
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        for rows in sorted(args.rows):
            r = measure(rows, args.cache, Path(tmp), extra, second_run=not args.no_second_run)
            runs.append(r)
            print(f"{rows:>9,} rows: {r['wall_seconds']:.1f} s, {r['cpu_seconds']:.0f} CPU s, peak {gib(r['peak_rss_bytes'])} GiB RSS, {gib(r['peak_pss_bytes'])} GiB PSS over all processes, "
                  + ", ".join(f"{n} {c['seconds']:.1f} s" for n, c in r["components"].items() if c.get("seconds"))
                  + (f"; second run {r['second_run_seconds']:.1f} s ({r['second_run_ratio']:.2f}x)" if "second_run_seconds" in r else ""))
    by_rows = {r["rows"]: r for r in runs}
    ratio = (round(by_rows[1_000_000]["wall_seconds"] / by_rows[100_000]["wall_seconds"], 2)
             if 100_000 in by_rows and 1_000_000 in by_rows else None)
    load = os.getloadavg()
    results = {
        "benchmark": "scale", "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "commit": commit(),
        "note": args.note or f"load average at the end {load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f}",
        "runs": runs, "time_ratio_1m_100k": ratio,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1))
    write_markdown(results)
    print(table(results))
    if ratio is not None:
        print(f"time(1M) / time(100k): {ratio}")
    return 0 if all(r["rows_kept"] and r["pushed"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
