"""`taxi-pipeline status`: the last runs as ML Metadata recorded them, and what the serving folder holds.

Everything shown is read back from the components' own records (execution states, the Evaluator's
metrics and validation result, the blessing and pushed-model artifacts), never recomputed, so the
table says what the pipeline actually decided. Reading is read-only: a run in progress is not
disturbed and shows its unfinished components as RUNNING.
"""
from __future__ import annotations

import argparse
import datetime
from pathlib import Path
from typing import List

import pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from pipeline import configs, report_quiet, report_store, run_results
from pipeline.errors import UserError

NO_RUNS = "no runs yet: run `taxi-pipeline run`"

# TFMA metric -> label; the two the blessing bars are on come first.
HEADLINE_METRICS = (("auc", "AUC"), ("binary_accuracy", "accuracy"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--home", type=Path, default=None,
                        help=f"the pipeline's home (default ./outputs or ${configs.HOME_ENV})")
    parser.add_argument("--runs", type=int, default=3, help="how many of the newest runs to show (default 3)")


def main(args) -> int:
    if args.runs < 1:
        raise UserError(f"--runs must be at least 1, not {args.runs}")
    home = (args.home or configs.default_home()).resolve()
    config = configs.PipelineConfig(home=home)
    report_store.metadata_store(home)  # a bad home fails here, before stderr is redirected into it
    with report_quiet.quiet(home, "status"):
        text = render(config, args.runs)
    print(text)
    return 0


def render(config: configs.PipelineConfig, limit: int) -> str:
    """The status text for the newest `limit` runs under `config.home` (UserError for a bad home)."""
    store = report_store.metadata_store(config.home)
    contexts = report_store.runs(store, limit) if store is not None else []
    if not contexts:
        return NO_RUNS
    lines: List[str] = []
    for context in contexts:
        result = run_results.load_run(config.metadata_path, context.name)
        lines += render_run(result, context.create_time_since_epoch) + _edge_lines(config, result) + [""]
    lines += render_serving(config.serving_model_dir)
    from pipeline import report_edge

    lines += report_edge.skew_lines(report_edge.skew_result(config.reports_dir))
    return "\n".join(lines)


def _edge_lines(config: configs.PipelineConfig, result: run_results.RunResult) -> List[str]:
    """Drift and TF Lite lines (pipeline/report_edge.py)."""
    from pipeline import report_edge

    lines = report_edge.drift_lines(report_edge.drift_report(result, config.pipeline_root))
    evaluation = report_edge.tflite_evaluation(result)
    if evaluation:
        m = evaluation["models"]
        q = m.get("dynamic_int8")
        if q:
            lines.append(f"tflite: dynamic-range int8 accuracy {q['accuracy']:.4f} (SavedModel {m['saved_model']['accuracy']:.4f}), "
                         f"{q['bytes'] / 1024:,.0f} KiB ({q['bytes'] / m['float']['bytes']:.2f}x float), {q['latency_ms']:.2f} ms/example")
    return ["  " + l for l in lines]


def render_run(result: run_results.RunResult, started_ms: int) -> List[str]:
    started = datetime.datetime.fromtimestamp(started_ms / 1000).strftime("%Y-%m-%d %H:%M:%S")
    states = [node.state for node in result.nodes.values()]
    verdict = "FAILED" if "FAILED" in states else ("running" if "RUNNING" in states else "finished")
    lines = [f"run {result.run_id}   started {started}   {verdict}"]
    lines.append(f"  {'component':<32} {'state':<9} {'seconds':>8}")
    for node in result.nodes.values():
        seconds = f"{node.seconds:8.1f}" if node.seconds is not None else f"{'-':>8}"
        lines.append(f"  {node.node_id:<32} {node.state:<9} {seconds}")
    lines.append("  " + _metrics_line(result))
    lines.append("  " + _blessing_line(result))
    lines.append("  " + _push_line(result))
    return lines


def _metrics_line(result: run_results.RunResult) -> str:
    uri = report_store.node_output_uri(result, "Evaluator", "evaluation")
    if uri is None:
        node = result.nodes.get("Evaluator")
        return f"eval: - ({f'the Evaluator is {node.state}' if node else 'the Evaluator did not run'})"
    metrics = run_results.overall_metrics(uri)
    shown = [f"{label} {metrics[key]:.4f}" for key, label in HEADLINE_METRICS if key in metrics]
    if "example_count" in metrics:
        shown.append(f"on {int(metrics['example_count']):,} eval examples")
    return "eval: " + ("  ".join(shown) if shown else "no metrics recorded")


def _blessing_line(result: run_results.RunResult) -> str:
    blessed = run_results.blessed(result)
    if blessed is None:
        return "blessed: - (the Evaluator did not finish)"
    if blessed:
        return "blessed: yes"
    uri = report_store.node_output_uri(result, "Evaluator", "evaluation")
    why = run_results.validation_failures(uri) if uri else []
    return "blessed: NO: " + ("; ".join(why) if why else "see the run's log")


def _push_line(result: run_results.RunResult) -> str:
    push = run_results.pushed(result)
    if push is not None:
        return f"pushed: version {push.version} -> {push.destination}"
    if result.nodes.get("Pusher") is None or result.nodes["Pusher"].state not in ("COMPLETE", "CACHED"):
        return "pushed: - (the Pusher did not run)"
    return "pushed: no (not blessed)"


def render_serving(model_dir: Path) -> List[str]:
    versions = report_store.serving_versions(model_dir)
    if not versions:
        return [f"serving {model_dir}: no versions (nothing pushed yet)"]
    names = [f"{versions[0]} (newest: served by default)"] + [str(v) for v in versions[1:]]
    return [f"serving {model_dir}: " + ", ".join(names)]

