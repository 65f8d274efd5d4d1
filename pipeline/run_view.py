"""One read-back of a pipeline run: a typed view that the summary, `status` and `report` all render.

Built from ML Metadata (`run_results.load_run`: executions, states, output artifacts) and the
components' own outputs, read with the libraries' own loaders: TFX's `artifact_utils` for split
folders, TFDV for statistics, the AnomaliesGate's reader (TFDV's) for anomalies, TFMA's
`load_metrics` / `load_validation_result` for metrics and the blessing's reasons. Nothing is
recomputed, so every renderer says what the pipeline decided, and says it the same way: the
verdict's wording lives here (`Verdict.line`, `push_line`), not in the renderers.

Readers tolerate a partial run: an output that was not produced (or is gone from disk) leaves its
field empty, and the renderers say so.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Dict, List, Optional, Tuple

from kubeflow import tfx_internals
from pipeline import rollback_record
from pipeline.run_results import NodeResult, RunResult, load_run
from trainer_module import records

OVERALL = "Overall"


@dataclasses.dataclass(frozen=True)
class ServingCheck:
    """The ServingValidator's infra blessing: did the candidate load in a model server and answer?"""

    passed: bool
    reason: str


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What became of the model: the Evaluator's blessing, why not, and the serving check."""

    evaluator_blessed: Optional[bool]  # None: the Evaluator recorded no blessing (did not run or finish)
    failures: Tuple[str, ...] = ()  # thresholds TFMA found missed, one line each
    serving_check: Optional[ServingCheck] = None  # None: the ServingValidator did not run
    withdrawn: str = ""  # a rollback withdrew the blessing since: "by the rollback to version V on DATE"

    @property
    def servable(self) -> bool:
        """Blessed by the Evaluator and, when it ran, by the serving check: what the Pusher requires."""
        return bool(self.evaluator_blessed) and (self.serving_check is None or self.serving_check.passed)

    @property
    def why_not(self) -> str:
        """Why the Evaluator did not bless (its missed thresholds), for the renderers' own sentences."""
        return "; ".join(self.failures) or "see the run's log"

    def line(self) -> str:
        """The one wording every renderer uses after "blessed: "."""
        if self.evaluator_blessed is None:
            return "- (the Evaluator did not finish)"
        if not self.evaluator_blessed:
            return "NO: " + self.why_not
        if self.serving_check is not None and not self.serving_check.passed:
            return f"blessed, but the serving check failed: {self.serving_check.reason}"
        return f"yes, withdrawn {self.withdrawn}" if self.withdrawn else "yes"


@dataclasses.dataclass(frozen=True)
class Push:
    version: str
    destination: str


@dataclasses.dataclass(frozen=True)
class Training:
    """How long the Trainer trained (its `<model_run>/training.json`)."""

    examples: int  # steps x global batch, as run_fn reported them
    steps: int
    global_batch_size: int
    train_rows: Optional[int]  # rows of the training split, as the executor counted them
    epochs: Optional[float]  # examples / train_rows
    steps_from: str  # "default epochs", "epochs" or "train_steps"
    warm_start: Optional[dict] = None  # trainer_module/warm_start.py's record; None: an older run
    hyperparameters: Optional[dict] = None  # hidden_units, embedding_dim, learning_rate, tuned (run_fn's record)

    def model_line(self, tuned_here: bool) -> Optional[str]:
        """'hidden units 256-128, embedding 16, learning rate 0.003 (defaults)', or None for an older run."""
        hp = self.hyperparameters
        if not hp:
            return None
        source = "tuned in this run" if tuned_here else ("the last tuning's" if hp.get("tuned") else "defaults")
        return (f"hidden units {'-'.join(map(str, hp['hidden_units']))}, embedding {hp['embedding_dim']}, "
                f"learning rate {hp['learning_rate']:g} ({source})")

    def line(self) -> str:
        text = f"{self.examples:,} examples ({self.steps:,} steps x {self.global_batch_size}"
        if self.train_rows:
            text += f"; {self.epochs:.2f} epochs of {self.train_rows:,} training rows"
        text += ", steps set by --train-steps)" if self.steps_from == "train_steps" else ")"
        if self.warm_start and self.warm_start.get("warm_start"):
            text += (f"; warm start from the baseline model ({self.warm_start['rows_carried']:,} of "
                     f"{self.warm_start['rows']:,} embedding rows carried over)")
        elif self.warm_start and self.warm_start.get("base_model"):  # given a base model, and could not use it
            text += f"; from scratch ({self.warm_start['why']})"
        return text


@dataclasses.dataclass(frozen=True)
class FeatureDistance:
    """One feature's distance between two sets of statistics (TFDV's drift or skew comparator)."""

    feature: str
    measure: str  # "L-infinity" or "Jensen-Shannon"
    distance: Optional[float]  # None: TFDV measured nothing (the feature is absent on one side)
    threshold: float
    crossed: bool

    def text(self) -> str:
        """'fare Jensen-Shannon 0.183 > 0.100' (or <=)."""
        if self.distance is None:
            return f"{self.feature} {self.measure} -"
        return f"{self.feature} {self.measure} {self.distance:.3f} {'>' if self.crossed else '<='} {self.threshold:.3f}"


def _distances(rows, flag: str) -> Tuple[FeatureDistance, ...]:
    return tuple(FeatureDistance(r["feature"], r["measure"], r.get("distance"), float(r["threshold"]), bool(r[flag]))
                 for r in rows)


@dataclasses.dataclass(frozen=True)
class Drift:
    """The DriftCheck's verdict: this run's training split against the latest blessed model's training data."""

    split: str
    baseline_model: Optional[str]
    features: Tuple[FeatureDistance, ...]
    note: str = ""  # why nothing was compared (cold start, a baseline without statistics)
    stopped: bool = False  # the check failed the run (the report was read from its output folder)

    @property
    def drifted(self) -> List[FeatureDistance]:
        return [f for f in self.features if f.crossed]

    def line(self) -> str:
        """The one wording every renderer uses after "drift: "."""
        if not self.features:
            return f"not checked ({self.note or 'no features compared'})"
        if not self.drifted:
            return "none (vs the training data of the latest blessed model)"
        verdict = "the run stopped before training" if self.stopped else "the run went on (--allow-drift)"
        return (", ".join(f.text() for f in self.drifted)
                + f" (vs the training data of the latest blessed model; {verdict})")


@dataclasses.dataclass(frozen=True)
class LiteScore:
    """One model of the TF Lite comparison (the SavedModel's serving_raw, or a .tflite file) on the raw eval rows."""

    kind: str  # "saved_model", "float", "dynamic_int8", "int8"
    accuracy: float
    auc: float
    bytes: int
    latency_ms: float  # one example, median
    weight_bytes: Optional[int] = None  # constant buffers of a .tflite file
    max_abs_diff: Optional[float] = None  # against the SavedModel's probabilities, same rows

    LABELS = {"saved_model": "SavedModel", "float": "TF Lite float", "dynamic_int8": "TF Lite dynamic-range int8",
              "int8": "TF Lite int8 (float fallback)"}

    @property
    def label(self) -> str:
        return self.LABELS.get(self.kind, self.kind)


@dataclasses.dataclass(frozen=True)
class TFLiteComparison:
    """The Trainer's `<model>/tflite/evaluation.json`: each TF Lite model beside the SavedModel."""

    rows: int
    models: Tuple[LiteScore, ...]
    full_integer: str = ""

    def model(self, kind: str) -> Optional[LiteScore]:
        return next((m for m in self.models if m.kind == kind), None)

    def size_ratio(self, kind: str) -> Optional[float]:
        """A quantized model's bytes over the float TF Lite model's."""
        model, base = self.model(kind), self.model("float")
        return model.bytes / base.bytes if model and base and base.bytes else None

    def line(self) -> str:
        """The one wording every renderer uses after "tflite: "."""
        q, sm = self.model("dynamic_int8"), self.model("saved_model")
        if q is None or sm is None:
            return "no quantized model"
        return (f"dynamic-range int8 accuracy {q.accuracy:.4f} (SavedModel {sm.accuracy:.4f}), "
                f"{q.bytes / 1024:,.0f} KiB ({self.size_ratio('dynamic_int8'):.2f}x float), "
                f"{q.latency_ms:.2f} ms/example")


@dataclasses.dataclass(frozen=True)
class SkewModel:
    """One model version's logged requests against its own training statistics."""

    model: str
    version: int
    rows: int
    features: Tuple[FeatureDistance, ...]
    note: str = ""
    training_rows: Optional[int] = None
    histograms: Optional[Dict[str, dict]] = None  # skewed feature -> training/serving distributions (the plot's)

    @property
    def skewed(self) -> List[FeatureDistance]:
        return [f for f in self.features if f.crossed]


@dataclasses.dataclass(frozen=True)
class SkewCheck:
    """The last `taxi-pipeline skew` (`<home>/reports/skew-latest.json`); not part of a run."""

    created: str
    logs: str
    models: Tuple[SkewModel, ...]

    def lines(self) -> List[str]:
        out = []
        for m in self.models:
            what = (", ".join(f.text() for f in m.skewed) if m.skewed else "none") if m.features else (m.note or "-")
            out.append(f"skew (last `taxi-pipeline skew`, {self.created}): model {m.model} v{m.version}, "
                       f"{m.rows:,} logged rows: {what}")
        return out


@dataclasses.dataclass
class RunView:
    run_id: str
    started_ms: int
    nodes: Dict[str, NodeResult]  # in execution order
    rows: Dict[str, int]  # split -> examples (StatisticsGen)
    anomalies: Dict[str, Dict[str, str]]  # split -> feature -> short description (ExampleValidator)
    metrics: Dict[str, Dict[str, float]]  # slice ("Overall", "payment_type=Cash") -> metric -> value
    verdict: Verdict
    push: Optional[Push]
    # The outputs the report reads in more detail (None when not produced or gone from disk).
    statistics_uri: Optional[str] = None
    evaluation_uri: Optional[str] = None
    model_run_uri: Optional[str] = None
    training: Optional[Training] = None
    drift: Optional[Drift] = None  # None: no DriftCheck in the run, or its report is gone
    tflite: Optional[TFLiteComparison] = None  # None: the Trainer wrote no TF Lite evaluation
    serving_graph: Optional[ServingGraph] = None  # None: the Trainer wrote no record of it

    @property
    def overall(self) -> Dict[str, float]:
        return self.metrics.get(OVERALL, {})

    @property
    def cached(self) -> List[str]:
        return [n for n, r in self.nodes.items() if r.state == "CACHED"]

    def state(self, node_id: str) -> Optional[str]:
        node = self.nodes.get(node_id)
        return node.state if node else None

    def absent(self, node_id: str) -> str:
        """Why a node's output is missing: 'X is FAILED', 'X did not run'."""
        state = self.state(node_id)
        return f"{node_id} is {state}" if state else f"{node_id} did not run"

    @property
    def analysis_reuse(self) -> Optional[str]:
        """What Transform's analysis took from the analyzer cache (runs over spans), None when not recorded."""
        from components.mlmd_properties import analysis_reuse

        node = self.nodes.get("Transform")
        cache = node.output("updated_analyzer_cache") if node else None
        return analysis_reuse(cache) if cache is not None else None

    @property
    def pushed_or_unchanged(self) -> bool:
        """A run succeeds when its model was pushed, or nothing changed and the Pusher came from cache."""
        return self.push is not None or self.state("Pusher") == "CACHED"

    def push_line(self) -> str:
        """The one wording every renderer uses after "pushed: "."""
        if self.push is not None:
            return f"version {self.push.version} -> {self.push.destination}"
        if self.state("Pusher") not in ("COMPLETE", "CACHED"):
            return "- (the Pusher did not run)"
        return f"no ({self.not_pushed_reason})"

    @property
    def not_pushed_reason(self) -> str:
        """Why a Pusher that ran pushed nothing."""
        if self.verdict.evaluator_blessed and not self.verdict.servable:
            return "the serving check failed; the serving directory is unchanged"
        return "not blessed; the serving directory is unchanged"


def load(metadata_path, run_id: Optional[str] = None, pipeline_root=None) -> Optional[RunView]:
    """The view of `run_id` (default: the newest run), None when the home has no run.

    `pipeline_root` lets the view find what a failed component wrote (ML Metadata records no outputs
    of a failed execution): the DriftCheck's report when the check stopped the run, found in the
    check's output folders by the time its execution ran."""
    result = load_run(metadata_path, run_id)
    return of(result, pipeline_root) if result is not None else None


def of(result: RunResult, pipeline_root=None) -> RunView:
    """The view of a run read back from ML Metadata."""
    statistics = _output(result, "StatisticsGen", "statistics")
    anomalies = _output(result, "ExampleValidator", "anomalies")
    evaluation = _output(result, "Evaluator", "evaluation")
    model_run = _output(result, "Trainer", "model_run")
    evaluation_uri = evaluation.uri if evaluation is not None else None
    return RunView(
        run_id=result.run_id,
        started_ms=result.started_ms,
        nodes=result.nodes,
        rows=split_row_counts(statistics) if statistics is not None else {},
        anomalies=_anomalies(anomalies) if anomalies is not None else {},
        metrics=metrics_by_slice(evaluation_uri) if evaluation_uri else {},
        verdict=_verdict(result, evaluation_uri),
        push=_push(result),
        statistics_uri=statistics.uri if statistics is not None else None,
        evaluation_uri=evaluation_uri,
        model_run_uri=model_run.uri if model_run is not None else None,
        training=training_length(model_run.uri) if model_run is not None else None,
        drift=_drift(result, pipeline_root),
        tflite=_tflite(result),
        serving_graph=serving_graph(model_run.uri) if model_run is not None else None,
    )


def _output(result: RunResult, node_id: str, key: str):
    """A node's output artifact if the run produced it and it is still on disk."""
    node = result.nodes.get(node_id)
    artifact = node.output(key) if node else None
    return artifact if artifact is not None and artifact.uri and os.path.exists(artifact.uri) else None


# ---- readers: TFX's split layout, the libraries' protos and loaders -----------------------------------

def _split_uris(artifact, artifact_class) -> Dict[str, str]:
    """split -> folder of a split artifact, by TFX's own layout (`Split-<name>`)."""
    from tfx.types import artifact_utils

    wrapped = artifact_class()
    wrapped.set_mlmd_artifact(artifact)
    names = artifact_utils.decode_split_names(wrapped.split_names) if wrapped.split_names else []
    return {split: artifact_utils.get_split_uri([wrapped], split) for split in names}


def split_row_counts(statistics_artifact) -> Dict[str, int]:
    """Rows per split, from StatisticsGen's output: the DatasetFeatureStatisticsList parsed as TFDV's
    `load_stats_binary` parses it, without importing TFDV (with the anomalies read the same way,
    `taxi-pipeline status` went from 12.0 s to 7.7 s: bench/RESULTS.md, 2026-12-01 (c))."""
    from tensorflow_metadata.proto.v0 import statistics_pb2
    from tfx.types import standard_artifacts

    counts = {}
    for split, uri in _split_uris(statistics_artifact, standard_artifacts.ExampleStatistics).items():
        path = os.path.join(uri, records.STATISTICS_FILE)
        if os.path.exists(path):
            with open(path, "rb") as f:
                stats = statistics_pb2.DatasetFeatureStatisticsList.FromString(f.read())
            counts[split] = int(stats.datasets[0].num_examples)
    return counts


def training_length(model_run_uri: str) -> Optional[Training]:
    """The Trainer's `training.json` (written by its executor), None when absent (an older run)."""
    import json

    path = os.path.join(model_run_uri, records.TRAINING_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        record = json.load(f)
    return Training(int(record["examples"]), int(record["steps"]), int(record["global_batch_size"]),
                    record.get("train_rows"), record.get("epochs"), record.get("steps_from", ""),
                    record.get("warm_start"), record.get("hyperparameters"))


def _anomalies(artifact) -> Dict[str, Dict[str, str]]:
    from components.anomalies_gate import anomalies_by_split  # the gate's reader: the gate and the view agree

    return anomalies_by_split(artifact)


def metrics_by_slice(evaluation_uri: str) -> Dict[str, Dict[str, float]]:
    """slice name ("Overall", "payment_type=Cash", ...) -> metric -> value, candidate model only (TFMA)."""
    return {name: {metric: v for (metric, is_diff), v in values.items() if not is_diff}
            for name, values in candidate_metrics(evaluation_uri).items()}


def candidate_metrics(evaluation_uri: str) -> Dict[str, Dict[Tuple[str, bool], float]]:
    """slice name -> (metric, is_diff) -> value for the candidate model: TFMA's metrics, its diffs against
    the baseline included. The one reader of an Evaluator's metrics."""
    import tensorflow_model_analysis as tfma

    result: Dict[str, Dict[Tuple[str, bool], float]] = {}
    for slice_metrics in tfma.load_metrics(evaluation_uri):
        keys = slice_metrics.slice_key.single_slice_keys
        name = OVERALL if not keys else ", ".join(f"{k.column}={_slice_value(k)}" for k in keys)
        values = result.setdefault(name, {})
        for kv in slice_metrics.metric_keys_and_values:
            if kv.key.model_name in ("", "candidate") and kv.value.HasField("double_value"):
                values[(kv.key.name, kv.key.is_diff)] = kv.value.double_value.value
    return result


def _slice_value(key) -> str:
    value = getattr(key, key.WhichOneof("kind"))
    return value.decode() if isinstance(value, bytes) else str(value)


def validation_failures(evaluation_uri: str) -> List[str]:
    """Why the Evaluator did not bless: one line per failed threshold (empty when it passed)."""
    import tensorflow_model_analysis as tfma

    result = tfma.load_validation_result(evaluation_uri)
    lines = []
    for failure in result.metric_validations_per_slice:
        for f in failure.failures:
            kind = "change against the baseline" if f.metric_key.is_diff else "value"
            lines.append(f"{f.metric_key.name} {kind} {f.metric_value.double_value.value:.4f} misses {_bound(f.metric_threshold)}")
    if result.missing_thresholds:
        lines.append(f"{len(result.missing_thresholds)} thresholds could not be checked")
    return lines


def _bound(threshold) -> str:
    """'the bar >= 0.9000' or 'the allowed change >= -0.0010' for a TFMA MetricThreshold proto."""
    from google.protobuf import json_format

    from pipeline.report_data import bound_text

    if threshold.HasField("value_threshold"):
        return "the bar " + bound_text(json_format.MessageToDict(threshold.value_threshold))
    return "the allowed change " + bound_text(json_format.MessageToDict(threshold.change_threshold))


def _verdict(result: RunResult, evaluation_uri: Optional[str]) -> Verdict:
    evaluator = result.nodes.get("Evaluator")
    blessing = evaluator.output("blessing") if evaluator else None
    if blessing is None or tfx_internals.BLESSED_KEY not in blessing.custom_properties:
        return Verdict(None)
    withdrawn = rollback_record.withdrawal(blessing)  # the Evaluator blessed it; a rollback took that back
    blessed = blessing.custom_properties[tfx_internals.BLESSED_KEY].int_value == 1 or bool(withdrawn)
    failures = tuple(validation_failures(evaluation_uri)) if (not blessed and evaluation_uri) else ()
    validator = result.nodes.get("ServingValidator")
    infra = validator.output("blessing") if validator else None
    check = None
    if infra is not None and tfx_internals.BLESSED_KEY in infra.custom_properties:
        check = ServingCheck(infra.custom_properties[tfx_internals.BLESSED_KEY].int_value == 1,
                             infra.custom_properties["reason"].string_value if "reason" in infra.custom_properties else "")
    return Verdict(blessed, failures, check, withdrawn)


def _push(result: RunResult) -> Optional[Push]:
    """Where the Pusher put the model (its PushedModel artifact), None when it pushed nothing."""
    pusher = result.nodes.get("Pusher")
    artifact = pusher.output("pushed_model") if pusher else None
    if artifact is None or artifact.custom_properties[tfx_internals.PUSHED_KEY].int_value != 1:
        return None
    props = artifact.custom_properties
    return Push(props[tfx_internals.PUSHED_VERSION_KEY].string_value,
                props[tfx_internals.PUSHED_DESTINATION_KEY].string_value)


@dataclasses.dataclass(frozen=True)
class ServingGraph:
    """What the pushed model's serving_default runs (the Trainer's `<model_run>/serving_graph.json`):
    the dense preprocessing, checked against TF-Transform's on the raw eval rows, or TF-Transform's own."""

    kind: str  # "dense_preprocessing" or "tf_transform"
    rows_checked: Optional[int]
    max_abs_diff: Optional[float]  # the largest over every transformed feature
    why: str = ""  # why TF-Transform's own layer serves

    def line(self) -> str:
        if self.kind == "dense_preprocessing":
            return (f"dense preprocessing (TF-Transform's outputs on {self.rows_checked:,} eval rows, "
                    f"largest difference {self.max_abs_diff:.1g})")
        return f"TF-Transform's layer ({self.why})"


def serving_graph(model_run_uri: str) -> Optional[ServingGraph]:
    """None when the Trainer wrote no record (an older run)."""
    record = _read_json(os.path.join(model_run_uri, records.SERVING_GRAPH_FILE))
    if record is None:
        return None
    diffs = record.get("max_abs_diff") or {}
    return ServingGraph(record["serving_default"], record.get("rows_checked"),
                        max(diffs.values()) if diffs else None, record.get("why", ""))


DRIFT_NODE = "DriftCheck"
SKEW_FILE = "skew-latest.json"  # `taxi-pipeline skew` writes it in <home>/reports/ (pipeline/skew.py)


def _read_json(path: Optional[str]):
    import json

    if not path or not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _drift(result: RunResult, pipeline_root=None) -> Optional[Drift]:
    """The DriftCheck's drift.json: its output artifact, or for a check that stopped the run, the copy
    it kept, named by its execution (components/drift_check.py: stopped_report_of)."""
    from components.drift_check import DRIFT_FILE, stopped_report_of  # the check's own names

    node = result.nodes.get(DRIFT_NODE)
    if node is None:
        return None
    artifact = _output(result, DRIFT_NODE, "drift")
    stopped = False
    path = os.path.join(artifact.uri, DRIFT_FILE) if artifact is not None else None
    if path is None and node.state == "FAILED" and pipeline_root is not None and node.execution_id is not None:
        path = stopped_report_of(os.path.join(str(pipeline_root), DRIFT_NODE), node.execution_id)
        stopped = True
    report = _read_json(path)
    if report is None:
        return None
    return Drift(report.get("split", records.TRAIN_SPLIT), report.get("baseline_model"), _distances(report.get("features", []), "drifted"),
                 report.get("note", ""), stopped and bool(report.get("drifted")))


def _tflite(result: RunResult) -> Optional[TFLiteComparison]:
    model = _output(result, "Trainer", "model")
    from trainer_module.tflite_export import load_evaluation  # the export's own reader

    report = load_evaluation(model.uri) if model is not None else None
    if report is None:
        return None
    scores = tuple(
        LiteScore(kind, float(m["accuracy"]), float(m["auc"]), int(m["bytes"]), float(m["latency_ms"]),
                  m.get("weight_bytes"), m.get("max_abs_diff_vs_saved_model"))
        for kind, m in report["models"].items())
    return TFLiteComparison(int(report["rows"]), scores, str(report.get("full_integer", "")))


def load_skew(reports_dir) -> Optional[SkewCheck]:
    """The last `taxi-pipeline skew` result, None when it never ran for this home."""
    report = _read_json(os.path.join(str(reports_dir), SKEW_FILE))
    if report is None:
        return None
    models = tuple(
        SkewModel(m["model"], int(m["version"]), int(m["rows"]), _distances(m.get("features", []), "skewed"),
                  m.get("note", ""), m.get("training_rows"), m.get("histograms"))
        for m in report.get("models", []))
    return SkewCheck(str(report.get("created", "")), str(report.get("logs", "")), models)
