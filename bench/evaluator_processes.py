"""The Evaluator alone, the way it ran before and the way it runs now, on one run's model and examples.

For each `--rows` size: a run of `taxi-pipeline run` on the scale bench's data (bench/scale.py) gives a
trained model and ExampleGen's examples; then TFX's Evaluator executor runs alone on them, in a fresh
process per measurement, alternating the variants `--repeats` times:

- `before`: one process, TFMA's default metrics included (what the pipeline did before
  `include_default_metrics=False` and several processes);
- `one`: the pipeline's EvalConfig now, one process (`--beam-mode in_memory`);
- `two`: the pipeline's EvalConfig now, `--workers` processes with the records dealt out among them
  (components/dealt_records.py; `--beam-mode multi_processing`, and `auto` above pipeline/beam_parallelism.py's
  threshold).
- `baseline_every_metric`: as `one`, with the model given again as the baseline (every run but a home's first
  has one), every metric computed for both models (the pipeline's EvalConfig before 2026-12-07);
- `baseline`: the same with the pipeline's EvalConfig now (the baseline measured for its AUC threshold only).

Reported: wall seconds, CPU seconds and peak summed RSS and PSS of all the processes (bench/scale.py's
sampler), and whether every metric of every slice equals `before`'s within 1e-6 (the same metrics by
another schedule, issue 25's acceptance 3).

    python -m bench evaluator_processes [--rows 15000 100000] [--repeats 2] [--home DIR] [--cache DIR]

Writes bench/results/evaluator_processes.json and its section of bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

from bench import results_md
from bench.scale import MemorySampler, children_cpu_seconds, commit

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results" / "evaluator_processes.json"
VARIANTS = ("before", "one", "two", "baseline_every_metric", "baseline")
TOLERANCE = 1e-6


# ---- one evaluation, in its own process ------------------------------------------------------------------

def newest_output(store, type_name: str, producer: str):
    """The newest artifact of a standard type `producer` wrote in an ML Metadata store, as TFX's artifact class."""
    from tfx.types import standard_artifacts

    found = [a for a in store.get_artifacts_by_type(type_name) if f"/{producer}/" in a.uri]
    artifact = getattr(standard_artifacts, type_name)()
    artifact.set_mlmd_artifact(max(found, key=lambda a: a.id))
    return artifact


def _evaluate(home: Path, out: Path, variant: str, workers: int) -> dict:
    """TFX's Evaluator executor on `home`'s last model and ExampleGen examples (the eval split)."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tensorflow_model_analysis as tfma
    from tfx.components.evaluator import executor as tfx_evaluator
    from tfx.types import standard_artifacts
    from tfx.utils import proto_utils

    from components import dealt_records
    from pipeline import configs, pipeline, run_results, run_view
    from trainer_module import records

    store = run_results.connect(home / "metadata.db")

    config = pipeline.eval_config(configs.PipelineConfig())
    props = {"example_splits": json.dumps([records.EVAL_SPLIT])}
    beam = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
    if variant == "before":
        config.ClearField("options")
    if variant == "baseline_every_metric":  # one spec, no model_names: every metric for both models
        every = tfma.MetricsSpec(metrics=[m for spec in config.metrics_specs for m in spec.metrics])
        del config.metrics_specs[:]
        config.metrics_specs.append(every)
    if variant == "two":
        beam = ["--direct_running_mode=multi_processing", f"--direct_num_workers={workers}"]
    props["eval_config"] = proto_utils.proto_to_json(config)
    evaluation, blessing = standard_artifacts.ModelEvaluation(), standard_artifacts.ModelBlessing()
    evaluation.uri, blessing.uri = str(out / "evaluation"), str(out / "blessing")
    for uri in (evaluation.uri, blessing.uri):
        os.makedirs(uri, exist_ok=True)
    executor = tfx_evaluator.Executor(tfx_evaluator.Executor.Context(
        beam_pipeline_args=beam, tmp_dir=str(out / "tmp"), unique_id="bench"))
    started = time.time()
    with dealt_records.dealt_among_workers(beam):
        model = newest_output(store, "Model", "Trainer")
        inputs = {"examples": [newest_output(store, "Examples", "CsvExampleGen")], "model": [model]}
        if variant.startswith("baseline"):
            inputs["baseline_model"] = [model]
        executor.Do(inputs, {"evaluation": [evaluation], "blessing": [blessing]}, props)
    wall = time.time() - started
    metrics = {f"{slice_name}:{name}": value  # NaN where a metric is undefined (no positive prediction in a slice)
               for slice_name, values in run_view.candidate_metrics(evaluation.uri).items()
               for (name, is_diff), value in values.items() if not is_diff}
    return {"executor_seconds": round(wall, 2), "metrics": metrics}


def measure_once(home: Path, variant: str, workers: int, workdir: Path) -> dict:
    """One evaluation in a fresh process: its wall time and the CPU time of it and its worker processes."""
    out = Path(tempfile.mkdtemp(prefix=f"{variant}-", dir=workdir))
    cpu_before = children_cpu_seconds()
    started = time.time()
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen([sys.executable, "-m", "bench.evaluator_processes", "--one", variant, "--home", str(home),
                             "--out", str(out), "--workers", str(workers)], cwd=str(REPO), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with MemorySampler(proc.pid) as memory:
        _, stderr = proc.communicate()
    wall = time.time() - started
    if proc.returncode != 0:
        raise RuntimeError(f"the {variant} evaluation failed:\n{stderr[-3000:]}")
    result = json.loads((out / "result.json").read_text())
    return {**result, "wall_seconds": round(wall, 1), "cpu_seconds": round(children_cpu_seconds() - cpu_before, 1),
            "peak_rss_bytes": memory.peak(), "peak_pss_bytes": memory.peak_pss()}


def differences(metrics: Dict[str, float], reference: Dict[str, float]) -> List[str]:
    """Metrics (slice:name) missing on either side or differing by more than TOLERANCE."""
    out = [k for k in sorted(set(metrics) ^ set(reference))]
    out += [k for k in sorted(set(metrics) & set(reference))
            if not (abs(metrics[k] - reference[k]) <= TOLERANCE or (math.isnan(metrics[k]) and math.isnan(reference[k])))]
    return out


# ---- the bench -------------------------------------------------------------------------------------------

def home_for(rows: int, cache: Path, workdir: Path) -> Path:
    from bench import scale

    home = workdir / f"home-{rows}"
    data = scale.dataset(rows, cache) if rows else None
    cmd = [sys.executable, "-m", "pipeline.cli", "run", "--home", str(home), "--beam-mode", "in_memory"]
    cmd += ["--data", str(data)] if data else []
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    with open(workdir / f"run-{rows}.log", "w") as log:
        if subprocess.run(cmd, cwd=str(REPO), env=env, stdout=log, stderr=subprocess.STDOUT).returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed; see {workdir / f'run-{rows}.log'}")
    return home


def bench_size(home: Path, rows: int, repeats: int, workers: int, workdir: Path, variants=VARIANTS) -> dict:
    runs: Dict[str, List[dict]] = {v: [] for v in variants}
    for _ in range(repeats):
        for variant in variants:  # alternated, so load changes fall on every variant alike
            runs[variant].append(measure_once(home, variant, workers, workdir))
            print(f"  {rows:>9,} rows  {variant:<6} {runs[variant][-1]['wall_seconds']:6.1f} s wall, "
                  f"{runs[variant][-1]['cpu_seconds']:6.1f} CPU s, peak {runs[variant][-1]['peak_rss_bytes'] / 2**30:.2f} GiB RSS, "
                  f"{runs[variant][-1]['peak_pss_bytes'] / 2**30:.2f} GiB PSS", flush=True)
    from pipeline.run_view import OVERALL

    reference = runs["before"][0]["metrics"]
    out = {"rows": rows, "eval_rows": int(reference.get(f"{OVERALL}:example_count", 0)), "variants": {}}
    for variant, measured in runs.items():
        out["variants"][variant] = {
            "wall_seconds": [m["wall_seconds"] for m in measured],
            "cpu_seconds": [m["cpu_seconds"] for m in measured],
            "median_wall_seconds": statistics.median(m["wall_seconds"] for m in measured),
            "median_cpu_seconds": statistics.median(m["cpu_seconds"] for m in measured),
            "peak_rss_bytes": max(m["peak_rss_bytes"] for m in measured),
            "peak_pss_bytes": max(m["peak_pss_bytes"] for m in measured),
            "metrics_differing": sorted({k for m in measured for k in differences(m["metrics"], reference)}),
            "metrics_compared": len(reference),
        }
    return out


def _gib(variant: dict) -> str:
    """Peak summed RSS / PSS of a variant's processes (not measured before 2026-12-07: '-')."""
    from bench.scale import gib

    rss = variant.get("peak_rss_bytes")
    return "-" if rss is None else f"{gib(rss)} / {gib(variant.get('peak_pss_bytes'))}"


def table(results: dict) -> str:
    lines = ["| rows (eval rows) | measured (commit, load before, repeats) | variant | wall s (median) | CPU s (median) "
             "| wall vs before | peak GiB, RSS / PSS | metrics equal to before (1e-6) |", "|---|---|---|---|---|---|---|---|"]
    for size in results["sizes"]:
        before = size["variants"]["before"]["median_wall_seconds"]
        when = f"{size['measured_at']} (`{size['commit']}`, {size['load_before']}, {size['repeats']})"
        for variant, v in size["variants"].items():
            same = "yes" if not v["metrics_differing"] else f"NO: {', '.join(v['metrics_differing'][:3])}"
            lines.append(f"| {size['rows']:,} ({size['eval_rows']:,}) | {when} | {variant} | {v['median_wall_seconds']:.1f} "
                         f"| {v['median_cpu_seconds']:.1f} | {v['median_wall_seconds'] / before:.2f}x | {_gib(v)} "
                         f"| {same} ({v['metrics_compared']}) |")
    return "\n".join(lines)


def write_markdown(results: dict) -> None:
    results_md.write_section("evaluator_processes", [
        "## The Evaluator on one and on several processes (`python -m bench evaluator_processes`)",
        "",
        f"On {results['machine']['cpus']} cores; alternated repeats per variant, each a fresh process running TFX's "
        "Evaluator executor on one run's model and eval split. `before`: one process with TFMA's default metrics; "
        "`one`: the pipeline's EvalConfig, one process; `two`: the same on two processes, the records dealt out "
        "among them (components/dealt_records.py; until 2026-12-07, a shuffle of TFMA's record batches). `baseline_every_metric` / `baseline`: as `one`, with the model also given as its baseline, every metric for both models / the baseline measured for its AUC threshold only (the pipeline since 2026-12-07). CPU: all processes. Sizes above 100k rows run with `--home` "
        "on a finished run's home (`--variants before two --repeats 1`).",
        "",
        table(results),
    ])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[15_000, 100_000],
                        help="sizes of the scale bench's data; 15000 runs the default data instead")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--home", type=Path, help="evaluate this home's last run instead (give its --rows)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS),
                        help="which to measure (before is the reference and always runs)")
    parser.add_argument("--cache", type=Path, default=REPO / "outputs" / "bench-data")
    parser.add_argument("--one", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        (args.out / "result.json").write_text(json.dumps(_evaluate(args.home, args.out, args.one, args.workers)))
        return 0
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    sizes = []
    with tempfile.TemporaryDirectory(prefix="bench-evaluator-") as tmp:
        for rows in (args.rows[:1] if args.home else sorted(args.rows)):
            home = args.home or home_for(0 if rows == 15_000 else rows, args.cache, Path(tmp))
            variants = ["before"] + [v for v in args.variants if v != "before"]
            sizes.append(bench_size(home, rows, args.repeats, args.workers, Path(tmp), variants))
    for size in sizes:
        size.update(measured_at=time.strftime("%Y-%m-%dT%H:%M:%S"), commit=commit(), repeats=args.repeats,
                    workers=args.workers, load_before=load)
    # Sizes measured now replace the same sizes measured before; the others are kept (each says when).
    earlier = json.loads(RESULTS.read_text())["sizes"] if RESULTS.exists() else []
    sizes = sorted([s for s in earlier if s["rows"] not in {n["rows"] for n in sizes}] + sizes, key=lambda s: s["rows"])
    results = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()}, "sizes": sizes}
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    write_markdown(results)
    print(table(results))
    bad = [s["rows"] for s in sizes for v in s["variants"].values() if v["metrics_differing"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
