"""TF Lite comparison, drift table and skew result: reading them back, and showing them in the summary,
`status` and the HTML report.

Self-contained on purpose (the summary, status and report call one function each), so the sections
move as one piece when the way a run is read back changes. Sources:
- TF Lite: `<Trainer model>/tflite/evaluation.json` (written by the Trainer);
- drift: the DriftCheck's `drift.json`; a run the check stopped has no output in ML Metadata (TFX
  records outputs of successful executions only), so the newest report on disk stands in;
- skew: `<home>/reports/skew-latest.json`, written by `taxi-pipeline skew`.
"""
from __future__ import annotations

import glob
import json
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from pipeline import run_results

MODEL_LABELS = {"saved_model": "SavedModel", "float": "TF Lite float", "dynamic_int8": "TF Lite dynamic-range int8",
                "int8": "TF Lite int8 (float fallback)"}


# ---- reading ------------------------------------------------------------------------------------

def tflite_evaluation(result: run_results.RunResult) -> Optional[Dict[str, object]]:
    node = result.nodes.get("Trainer")
    uri = node.output_uri("model") if node else None
    path = os.path.join(uri, "tflite", "evaluation.json") if uri else None
    if not path or not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def drift_report(result: run_results.RunResult, pipeline_root: Optional[Path] = None) -> Optional[Dict[str, object]]:
    """The DriftCheck's report; for a run it stopped, the newest report on disk (marked `from_disk`)."""
    node = result.nodes.get("DriftCheck")
    if node is None:
        return None
    uri = node.output_uri("drift")
    if uri and os.path.exists(os.path.join(uri, "drift.json")):
        with open(os.path.join(uri, "drift.json")) as f:
            return json.load(f)
    if node.state == "FAILED" and pipeline_root is not None:
        found = glob.glob(os.path.join(str(pipeline_root), "DriftCheck", "drift", "*", "drift.json"))
        if found:
            with open(max(found, key=os.path.getmtime)) as f:
                return {**json.load(f), "from_disk": True}
    return None


def skew_result(reports_dir: Path) -> Optional[Dict[str, object]]:
    path = Path(reports_dir) / "skew-latest.json"
    if not path.exists():
        return None
    return json.loads(path.read_text())


# ---- text (summary and status) ------------------------------------------------------------------

def tflite_lines(evaluation: Optional[Dict[str, object]]) -> List[str]:
    if not evaluation:
        return []
    models = evaluation["models"]
    base = models.get("saved_model", {})
    lines = [f"TF Lite (eval split, {evaluation['rows']:,} rows, raw features in):"]
    for kind, m in models.items():
        size = f"{m['bytes'] / 1024:,.0f} KiB"
        ratio = f" ({m['bytes'] / models['float']['bytes']:.2f}x float)" if kind in ("dynamic_int8", "int8") else ""
        delta = "" if kind == "saved_model" else f"  (accuracy {m['accuracy'] - base['accuracy']:+.4f})"
        lines.append(f"  {MODEL_LABELS.get(kind, kind):<30} accuracy {m['accuracy']:.4f}  AUC {m['auc']:.4f}  "
                     f"{size}{ratio}  {m['latency_ms']:.2f} ms/example{delta}")
    return lines


def drift_lines(report: Optional[Dict[str, object]]) -> List[str]:
    if report is None:
        return []
    if not report.get("features"):
        return [f"drift: not checked ({report.get('note', 'no features compared')})"]
    drifted = [r for r in report["features"] if r["drifted"]]
    head = "drift: " + (", ".join(f"{r['feature']} {r['measure']} {r['distance']:.3f} > {r['threshold']:.3f}"
                                  for r in drifted) if drifted else "none")
    head += " (vs the training data of the latest blessed model)"
    return [head]


def skew_lines(skew: Optional[Dict[str, object]]) -> List[str]:
    if not skew:
        return []
    lines = []
    for m in skew["models"]:
        what = ", ".join(m["skewed"]) if m.get("skewed") else ("none" if m.get("features") else m.get("note", "-"))
        lines.append(f"skew (last `taxi-pipeline skew`, {skew['created']}): model {m['model']} v{m['version']}, "
                     f"{m['rows']:,} logged rows: {what}")
    return lines


# ---- plots -----------------------------------------------------------------------------------------

def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def tflite_plot(evaluation: Dict[str, object]) -> bytes:
    from pipeline.report_plots import _png

    plt = _plt()
    models = evaluation["models"]
    kinds = list(models)
    short = {"saved_model": "SavedModel", "float": "TFLite\nfloat", "dynamic_int8": "TFLite\ndyn. int8",
             "int8": "TFLite\nint8"}
    labels = [short.get(k, k) for k in kinds]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3))
    values = [("accuracy", [models[k]["accuracy"] for k in kinds]), ("AUC", [models[k]["auc"] for k in kinds])]
    for ax, (name, ys) in zip(axes[:2], values):
        ax.bar(labels, ys, color=["#7f8c8d"] + ["#2980b9"] * (len(kinds) - 1))
        low = min(ys) - 0.02
        ax.set_ylim(max(0.0, low), min(1.0, max(ys) + 0.01))
        ax.set_title(f"{name} on the eval split")
        for i, y in enumerate(ys):
            ax.text(i, y, f"{y:.4f}", ha="center", va="bottom", fontsize=7)
        ax.tick_params(axis="x", labelsize=7)
    ax = axes[2]
    sizes = [models[k]["bytes"] / 1024 for k in kinds]
    weights = [models[k].get("weight_bytes", 0) / 1024 for k in kinds]
    ax.bar(labels, sizes, color="#bdc3c7", label="file")
    ax.bar(labels, weights, color="#2980b9", label="of which weights/constants")
    ax.set_yscale("log")
    ax.set_title("size (KiB, log scale)")
    ax.legend(fontsize=7)
    ax.tick_params(axis="x", labelsize=7)
    return _png(fig)


def distance_plot(rows: Sequence[Dict[str, object]], flag: str, title: str) -> bytes:
    """Distance over threshold per feature (1.0 = the threshold); red bars crossed it."""
    from pipeline.report_plots import _png

    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1))
    names = [r["feature"] for r in rows]
    ratios = [(r["distance"] or 0.0) / r["threshold"] for r in rows]
    ax.barh(names, ratios, color=["#c0392b" if r[flag] else "#7f8c8d" for r in rows])
    ax.axvline(1.0, color="black", linestyle="--", linewidth=1)
    for i, r in enumerate(rows):
        ax.text(ratios[i], i, f" {r['measure']} {r['distance'] or 0:.3f} / {r['threshold']:.3f}", va="center", fontsize=7)
    ax.set_xlabel("distance / threshold")
    ax.set_title(title)
    ax.set_xlim(0, max(ratios + [1.0]) * 1.6)
    return _png(fig)


# ---- HTML sections -------------------------------------------------------------------------------

def _cells(values):
    from pipeline.report_html import Cell

    return [Cell(v, "num") if isinstance(v, str) and v[:1].isdigit() else v for v in values]


def tflite_section(result: run_results.RunResult) -> Tuple[str, str, str]:
    from pipeline.report_html import figure, paragraph, section, table

    evaluation = tflite_evaluation(result)
    if evaluation is None:
        body = [paragraph("No TF Lite evaluation in this run (the Trainer did not finish, or ran without the raw "
                          "examples).", "note")]
    else:
        models = evaluation["models"]
        rows = []
        for kind, m in models.items():
            rows.append(_cells([MODEL_LABELS.get(kind, kind), f"{m['accuracy']:.4f}", f"{m['auc']:.4f}",
                                f"{m['bytes'] / 1024:,.1f}", f"{m.get('weight_bytes', 0) / 1024:,.1f}" if kind != "saved_model" else "-",
                                f"{m['latency_ms']:.2f}",
                                f"{m['max_abs_diff_vs_saved_model']:.4f}" if "max_abs_diff_vs_saved_model" in m else "-"]))
        body = [paragraph(f"Every model scored on the same {evaluation['rows']:,} raw eval rows through the "
                          "raw-feature signature (TF-Transform inside). Latency: one example, median of 200 calls, "
                          "one thread. Full-integer: " + str(evaluation.get("full_integer", "-")), "note"),
                figure(tflite_plot(evaluation), "TF Lite vs SavedModel"),
                table(("model", "accuracy", "AUC", "KiB", "weights KiB", "ms/example", "max |p - p_SavedModel|"),
                      rows, "tflite-table")]
    return "tflite", "TF Lite", section("tflite", "TF Lite", body)


def drift_section(result: run_results.RunResult, pipeline_root: Optional[Path] = None) -> Tuple[str, str, str]:
    from pipeline.report_html import Cell, figure, paragraph, section, table

    report = drift_report(result, pipeline_root)
    if report is None:
        body = [paragraph("No drift check in this run.", "note")]
    elif not report.get("features"):
        body = [paragraph(f"Not checked: {report.get('note', 'no features compared')}.", "note")]
    else:
        rows = [(r["feature"], r["measure"], Cell(f"{r['distance']:.4f}" if r["distance"] is not None else "-", "num"),
                 Cell(f"{r['threshold']:.4f}", "num"), Cell("DRIFT" if r["drifted"] else "ok", "fail" if r["drifted"] else ""))
                for r in report["features"]]
        note = (f"This run's {report['split']} split against the training data of the latest blessed model "
                f"({report['baseline_model']}).")
        if report.get("from_disk"):
            note += " The check stopped the run; this is the newest report on disk."
        body = [paragraph(note, "note"), figure(distance_plot(report["features"], "drifted", "drift by feature"), "drift"),
                table(("feature", "measure", "distance", "threshold", "verdict"), rows, "drift-table")]
    return "drift", "Drift", section("drift", "Drift", body)


def skew_section(reports_dir: Path) -> Tuple[str, str, str]:
    from pipeline.report_html import Cell, figure, paragraph, section, table

    skew = skew_result(reports_dir)
    if skew is None:
        body = [paragraph("No skew check yet: serve with a logging_config, then run `taxi-pipeline skew --logs DIR`.",
                          "note")]
    else:
        body = [paragraph(f"Last `taxi-pipeline skew` ({skew['created']}) on {skew['logs']}.", "note")]
        for m in skew["models"]:
            if not m.get("features"):
                body.append(paragraph(f"model {m['model']} v{m['version']}: {m.get('note', '-')}", "note"))
                continue
            rows = [(r["feature"], r["measure"], Cell(f"{r['distance']:.4f}" if r["distance"] is not None else "-", "num"),
                     Cell(f"{r['threshold']:.4f}", "num"), Cell("SKEW" if r["skewed"] else "ok", "fail" if r["skewed"] else ""))
                    for r in m["features"]]
            body += [figure(distance_plot(m["features"], "skewed",
                                          f"{m['model']} v{m['version']}: {m['rows']:,} logged rows vs training data"),
                            "skew"),
                     table(("feature", "measure", "distance", "threshold", "verdict"), rows, f"skew-table-{m['version']}")]
    return "skew", "Training-serving skew", section("skew", "Training-serving skew", body)
