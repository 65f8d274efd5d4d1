"""The end-of-run summary: what came in, what was found, how good the model is, and where it went.

Every figure is read from the components' outputs (see `run_results`), never recomputed.
"""
from __future__ import annotations

from typing import List

from pipeline import configs, run_results

# TFMA metric name -> (label in the summary, config attribute holding its bound, if any)
SHOWN_METRICS = (
    ("binary_accuracy", "accuracy", "min_accuracy"),
    ("auc", "AUC", "min_auc"),
    ("precision", "precision", None),
    ("recall", "recall", None),
    ("calibration", "calibration", None),
    ("example_count", "eval examples", None),
)


def render(config: configs.PipelineConfig, result: run_results.RunResult) -> str:
    nodes = result.nodes
    lines: List[str] = ["", f"Summary of run {result.run_id}"]
    cached = [n for n, r in nodes.items() if r.state == "CACHED"]
    if cached:
        lines.append(f"  from cache: {', '.join(cached)}")

    stats = nodes.get("StatisticsGen")
    if stats and stats.output_uri("statistics"):
        counts = run_results.split_row_counts(stats.output_uri("statistics"))
        lines.append("  rows: " + ", ".join(f"{split} {n:,}" for split, n in counts.items()))

    validator = nodes.get("ExampleValidator")
    if validator and validator.output_uri("anomalies"):
        found = run_results.anomalies(validator.output_uri("anomalies"))
        problems = [f"{split}: {feature} ({text})" for split, items in found.items() for feature, text in items.items()]
        lines.append("  anomalies: " + ("none" if not problems else "; ".join(problems)))

    from pipeline import report_edge  # drift and TF Lite lines: self-contained

    lines += ["  " + l for l in report_edge.drift_lines(report_edge.drift_report(result, config.pipeline_root))]

    evaluator = nodes.get("Evaluator")
    if evaluator and evaluator.output_uri("evaluation"):
        metrics = run_results.overall_metrics(evaluator.output_uri("evaluation"))
        lines.append("  evaluation (eval split, from the Evaluator):")
        for key, label, bound in SHOWN_METRICS:
            if key in metrics:
                value = metrics[key]
                text = f"{int(value):,}" if key == "example_count" else f"{value:.4f}"
                if bound:
                    limit = getattr(config, bound)
                    text += f"   (bar {limit:.2f}: {'pass' if value >= limit else 'FAIL'})"
                lines.append(f"    {label:<14} {text}")
        if run_results.blessed(result):
            lines.append("  blessed: yes (above the bars, no regression against the latest blessed model)")
        else:
            why = run_results.validation_failures(evaluator.output_uri("evaluation")) or ["see the log"]
            lines.append("  blessed: NO: " + "; ".join(why))

    lines += ["  " + l for l in report_edge.tflite_lines(report_edge.tflite_evaluation(result))]

    validator = nodes.get("ServingValidator")
    infra = validator.output("blessing") if validator else None
    if infra is not None:
        ok = infra.custom_properties["blessed"].int_value == 1
        reason = infra.custom_properties["reason"].string_value
        lines.append(f"  serving check: {'passed' if ok else 'FAILED'} ({reason})")

    push = run_results.pushed(result)
    if push is not None:
        lines.append(f"  pushed: {push.destination}")
        lines.append(f"  serve it: taxi-pipeline serve --home {config.home}")
    else:
        lines.append("  pushed: no (the model was not blessed or failed the serving check; the serving directory is unchanged)")
    return "\n".join(lines)


def pushed_or_unchanged(result: run_results.RunResult) -> bool:
    """A run succeeds when its model was pushed, or when nothing changed and the Pusher came from cache."""
    pusher = result.nodes.get("Pusher")
    return pusher is not None and (pusher.state == "CACHED" or run_results.pushed(result) is not None)
