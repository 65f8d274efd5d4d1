"""The served graph's own cost: serving_default (dense preprocessing) against serving_tf_transform.

Both signatures of the same pushed model take the same serialized tf.Examples and give the same
probabilities (tests/test_exported_model.py); they differ in how the preprocessing is computed
(trainer_module/dense_preprocessing.py). This measures what a model server pays per Session run for
each, as TF Serving runs a signature (one Session run of its tensors; here our server's own
SavedModelServable, one intra-op and one inter-op thread as bench.serving_latency runs it), alternating
the two in rounds, at several batch sizes. Reported: median microseconds per run of each, their ratio,
and the ops each run executes (from a traced run).

    python -m bench.serving_graph [--home HOME] [--rounds N]
"""
from __future__ import annotations

import argparse
import glob
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "serving_graph.json"
BATCH_SIZES = (1, 4, 16, 64)
SIGNATURES = ("serving_default", "serving_tf_transform")


def _timed_runs(servable, sig, batch, runs: int) -> float:
    for _ in range(20):
        servable.run_direct(sig, batch, sig.output_keys)
    started = time.perf_counter()
    for _ in range(runs):
        servable.run_direct(sig, batch, sig.output_keys)
    return (time.perf_counter() - started) / runs * 1e6


def _ops_per_run(servable, sig, batch) -> int:
    import tensorflow as tf

    graph = servable._graph  # pylint: disable=protected-access
    feed = {graph.get_tensor_by_name(sig.inputs[k].tensor_name): v for k, v in batch.items()}
    fetch = [graph.get_tensor_by_name(sig.outputs[k].tensor_name) for k in sig.output_keys]
    metadata = tf.compat.v1.RunMetadata()
    servable._session.run(fetch, feed, run_metadata=metadata,  # pylint: disable=protected-access
                          options=tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE))
    return sum(len(d.node_stats) for d in metadata.step_stats.dev_stats)


def main(argv=None) -> int:
    import numpy as np
    import tensorflow as tf

    from pipeline import configs
    from serving.config import model_config
    from serving.servables.servable import SavedModelServable, ServableOptions, session_config

    parser = argparse.ArgumentParser(prog="python -m bench.serving_graph", description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=configs.default_home())
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--runs", type=int, default=300, help="Session runs per (signature, batch size, round)")
    args = parser.parse_args(argv)

    config = configs.PipelineConfig(home=args.home)
    if not model_config.versions_on_disk(str(config.serving_model_dir)):
        # No pushed model there (e.g. `make bench` on a fresh clone): make one, in a home of its own.
        home = Path(tempfile.mkdtemp(prefix="serving-graph-"))
        print(f"no pushed model under {config.serving_model_dir}: running the pipeline into {home} (~1 min)")
        done = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", "--home", str(home)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        if done.returncode != 0:
            print(f"error: the pipeline run failed (exit {done.returncode}); see {home}/logs", file=sys.stderr)
            return 1
        config = configs.PipelineConfig(home=home)
    versions = model_config.versions_on_disk(str(config.serving_model_dir))
    version_dir = versions[max(versions)]
    servable = SavedModelServable("taxi", max(versions), version_dir,
                                  ServableOptions(session_config=session_config(1, 1)))
    missing = [name for name in SIGNATURES if servable.find_signature(name) is None]
    if missing:
        print(f"error: {version_dir} has no {', '.join(missing)} signature (a model exported before the dense "
              "preprocessing); run the pipeline again", file=sys.stderr)
        return 1
    eval_files = glob.glob(str(config.pipeline_root / "CsvExampleGen" / "examples" / "*" / "Split-eval" / "*"))
    examples = [r.numpy() for r in tf.data.TFRecordDataset(eval_files, compression_type="GZIP").take(max(BATCH_SIZES))]
    sigs = {name: servable.signature(name) for name in SIGNATURES}
    batches = {size: {"examples": np.array(examples[:size], dtype=object)} for size in BATCH_SIZES}

    samples = {(name, size): [] for name in SIGNATURES for size in BATCH_SIZES}
    for r in range(args.rounds):
        order = SIGNATURES if r % 2 == 0 else SIGNATURES[::-1]
        for size in BATCH_SIZES:
            for name in order:
                samples[(name, size)].append(_timed_runs(servable, sigs[name], batches[size], args.runs))
    result = {"command": "python -m bench.serving_graph " + " ".join(argv if argv is not None else sys.argv[1:]),
              "model": version_dir, "ops_per_run": {name: _ops_per_run(servable, sigs[name], batches[1])
                                                    for name in SIGNATURES}, "batch_sizes": {}}
    print(f"model: {version_dir}")
    print("ops per run: " + ", ".join(f"{name} {n}" for name, n in result["ops_per_run"].items()))
    print(f"{'batch':>5} {'dense us':>9} {'tf-transform us':>16} {'ratio':>6}")
    for size in BATCH_SIZES:
        dense = statistics.median(samples[("serving_default", size)])
        reference = statistics.median(samples[("serving_tf_transform", size)])
        result["batch_sizes"][size] = {"serving_default_us": dense, "serving_tf_transform_us": reference,
                                       "ratio": dense / reference}
        print(f"{size:>5} {dense:9.1f} {reference:16.1f} {dense / reference:6.2f}")
    servable.close()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
