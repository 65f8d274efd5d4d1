"""The end-of-run summary: what came in, what was found, how good the model is, and where it went.

Every figure comes from the run's view (`run_view`), read from the components' outputs, never recomputed.
"""
from __future__ import annotations

from typing import List

from pipeline import configs, spans
from pipeline.run_view import RunView, TFLiteComparison

# TFMA metric name -> (label in the summary, config attribute holding its bound, if any)
SHOWN_METRICS = (
    ("binary_accuracy", "accuracy", "min_accuracy"),
    ("auc", "AUC", "min_auc"),
    ("precision", "precision", None),
    ("recall", "recall", None),
    ("calibration", "calibration", None),
    ("example_count", "eval examples", None),
)


def render(config: configs.PipelineConfig, view: RunView) -> str:
    lines: List[str] = ["", f"Summary of run {view.run_id}"]
    if view.cached:
        lines.append(f"  from cache: {', '.join(view.cached)}")
    if view.rows:
        lines.append("  rows: " + ", ".join(f"{split} {n:,}" for split, n in view.rows.items()))
    if view.state("ExampleValidator") is not None:
        problems = [f"{split}: {feature} ({text})" for split, items in view.anomalies.items() for feature, text in items.items()]
        lines.append("  anomalies: " + ("none" if not problems else "; ".join(problems)))

    if config.span is not None:
        lines.append(f"  span: {_span(config, config.span)} ingested; trained on "
                     + (_spans(config, config.window_spans) if config.window_spans else "its own train split")
                     + (f"; analyzer cache: {view.analysis_reuse}" if view.analysis_reuse else ""))
    if view.drift is not None:
        lines.append(f"  drift: {view.drift.line()}")
    if view.training is not None:
        lines.append(f"  trained on: {view.training.line()}")
        model = view.training.model_line(tuned_here=view.state("Tuner") in ("COMPLETE", "CACHED"))
        if model:
            lines.append(f"  model: {model}")
    if view.serving_graph is not None:
        lines.append(f"  serving_default runs: {view.serving_graph.line()}")
    if view.evaluation_uri:
        judged = (f"all of {_span(config, config.span)}, trained on {_spans(config, config.window_spans)}"
                  if config.window_spans else "eval split")
        lines.append(f"  evaluation ({judged}, from the Evaluator):")
        for key, label, bound in SHOWN_METRICS:
            if key in view.overall:
                value = view.overall[key]
                text = f"{int(value):,}" if key == "example_count" else f"{value:.4f}"
                if bound:
                    limit = getattr(config, bound)
                    text += f"   (bar {limit:.2f}: {'pass' if value >= limit else 'FAIL'})"
                lines.append(f"    {label:<14} {text}")
    if view.tflite is not None:
        lines += ["  " + line for line in tflite_lines(view.tflite)]
    if view.verdict.evaluator_blessed is not None:
        lines.append(f"  blessed: {view.verdict.line()}")
    check = view.verdict.serving_check
    if check is not None:
        lines.append(f"  serving check: {'passed' if check.passed else 'FAILED'} ({check.reason})")
    lines.append(f"  pushed: {view.push_line()}")
    if view.push is not None:
        lines.append(f"  serve it: taxi-pipeline serve --home {config.home}")
    return "\n".join(lines)


def _span(config: configs.PipelineConfig, span: int) -> str:
    return spans.label(span, config.span_pattern)


def _spans(config: configs.PipelineConfig, numbers) -> str:
    return ", ".join(_span(config, span) for span in numbers)


def tflite_lines(comparison: TFLiteComparison) -> List[str]:
    """The TF Lite table: each model on the same raw eval rows, its size (quantized: against float) and latency."""
    base = comparison.model("saved_model")
    lines = [f"TF Lite (eval split, {comparison.rows:,} rows, raw features in):"]
    for m in comparison.models:
        ratio = comparison.size_ratio(m.kind) if m.kind in ("dynamic_int8", "int8") else None
        size = f"{m.bytes / 1024:,.0f} KiB" + (f" ({ratio:.2f}x float)" if ratio is not None else "")
        delta = f"  (accuracy {m.accuracy - base.accuracy:+.4f})" if base is not None and m.kind != "saved_model" else ""
        lines.append(f"  {m.label:<30} accuracy {m.accuracy:.4f}  AUC {m.auc:.4f}  {size}  "
                     f"{m.latency_ms:.2f} ms/example{delta}")
    return lines
