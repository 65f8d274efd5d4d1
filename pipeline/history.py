"""The runs of a home as a trend: one record per pipeline run, oldest first, read back from ML Metadata.

Each record says what one run ingested and decided: the span its CsvExampleGen read (TFX's `span`
property of the Examples artifact, named as pipeline.spans names it), the rows StatisticsGen counted
per split, the Evaluator's AUC and accuracy on the eval split (with spans: the newest span) and the
bars it held them to, the DriftCheck's distance per feature, the verdict (pushed, not blessed, refused
by a gate, failed) and the version serving after the run. Everything comes from `run_view` (the one
reader of a run), the Evaluator's own config and ML Metadata, nothing is recomputed; `status --history`
prints the records as a table and the report draws them (`report_plots.trend`).

The serving version after a run is the version the newest push or rollback up to that run left at the
push destination: pushes are PushedModel artifacts with `pushed` = 1 (the AtomicPusher's record, also
for a re-push of the model already serving), rollbacks the `Rollback` executions `taxi-pipeline
rollback` writes; runs older than the ones shown still count.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import sys
from typing import Dict, List, Optional, Tuple

from ml_metadata import errors as mlmd_errors
from ml_metadata.proto import metadata_store_pb2

from components.mlmd_properties import span_of
from kubeflow.tfx_internals import PUSHED_KEY, PUSHED_VERSION_KEY
from pipeline import report_data, report_store, rollback_record, run_view, spans
from pipeline.run_view import FeatureDistance, RunView

EXAMPLE_GEN = spans.EXAMPLE_GEN  # the node that ingests
GATES = spans.GATES  # a FAILED gate refused the data: the run stopped on purpose
PUSHED_MODEL_TYPE = "PushedModel"

# What became of a run, in the words every renderer uses.
PUSHED = "pushed"  # a new version went to the serving folder
SAME_MODEL = "same model"  # blessed, and the serving version already is this model (nothing new to push)
NOT_BLESSED = "not blessed"  # the Evaluator's bars or its no-regression check said no
SERVING_CHECK_FAILED = "serving check failed"  # blessed, but it did not load or answer in a model server
REFUSED = "refused"  # the AnomaliesGate or the DriftCheck stopped the run before training
FAILED = "failed"  # a component failed for another reason (see the run's log)
RUNNING = "running"
UNKNOWN = "-"  # nothing failed and the Pusher did not run (a run cut short)


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """One pipeline run, as the trend shows it."""

    run_id: str
    started_ms: int
    span: Optional[int]  # the Examples artifact's `span` (0 for a plain folder); None: not recorded
    span_label: str  # the span as its folder names it: "span-3", "2013-04-01" (a dated folder), "0", "-"
    rows: Dict[str, int]  # split -> rows ingested (StatisticsGen)
    auc: Optional[float]  # on the eval split (Evaluator, overall slice); None: not evaluated
    accuracy: Optional[float]
    eval_examples: Optional[int]
    bars: Dict[str, float]  # metric -> the bar the Evaluator applied ("auc", "binary_accuracy"); {}: not evaluated
    drift: Tuple[FeatureDistance, ...]  # empty: not compared (cold start) or no DriftCheck ran
    verdict: str  # one of the words above
    reason: str  # the gate that refused, the component that failed, the bars missed, or ""
    pushed_version: Optional[str]  # the version this run's Pusher recorded (also a re-push of the same model)
    serving_version: Optional[str]  # the version serving after this run (None: nothing pushed yet)
    serving_changed: bool  # this run changed the serving version
    rollbacks: Tuple["Rollback", ...] = ()  # `taxi-pipeline rollback`s between the run before and this one

    @property
    def drift_ratio(self) -> Optional[float]:
        """The largest distance over its threshold (> 1: a feature crossed it); None: nothing measured."""
        ratios = [f.distance / f.threshold for f in self.drift if f.distance is not None and f.threshold > 0]
        return max(ratios) if ratios else None

    @property
    def drifted(self) -> List[str]:
        return [f.feature for f in self.drift if f.crossed]

    @property
    def total_rows(self) -> Optional[int]:
        return sum(self.rows.values()) if self.rows else None


@dataclasses.dataclass(frozen=True)
class Rollback:
    """A `taxi-pipeline rollback` as ML Metadata recorded it (pipeline/rollback_record.py writes it)."""

    at_ms: int
    from_version: str
    to_version: str

    def line(self) -> str:
        when = datetime.datetime.fromtimestamp(self.at_ms / 1000).strftime("%Y-%m-%d %H:%M:%S")
        return f"rolled back {when}: version {self.from_version} -> {self.to_version}"


def records(config, limit: int, until: Optional[str] = None) -> List[RunRecord]:
    """The newest `limit` runs of `config.home` (up to and including run `until`, when given), oldest first.

    UserError for a bad home (report_store.metadata_store); [] for a home with no runs."""
    store = report_store.metadata_store(config.home)
    if store is None:
        return []
    contexts = report_store.runs(store, limit=sys.maxsize)[::-1]  # every run, oldest first
    if not contexts:
        return []
    names = [c.name for c in contexts]
    if until is not None and until in names:
        contexts = contexts[:names.index(until) + 1]
    pushes = pushed_versions(store)
    pending = rollbacks(store)
    serving: Optional[str] = None
    first_shown = max(0, len(contexts) - limit)
    out = []
    for index, context in enumerate(contexts):
        before = tuple(r for r in pending if r.at_ms < context.create_time_since_epoch)
        pending = pending[len(before):]
        if before:
            serving = before[-1].to_version
        if index < first_shown:  # older than the runs shown: only the serving version they left counts
            serving = pushes.get(context.name, serving)
            continue
        view = run_view.load(config.metadata_path, context.name, config.pipeline_root)
        record = of(view, serving, pushes.get(context.name), input_pattern(store, view), before)
        serving = record.serving_version
        out.append(record)
    return out


def rollbacks(store) -> List[Rollback]:
    """Every completed rollback, oldest first (the `Rollback` executions `taxi-pipeline rollback` writes)."""
    try:
        executions = store.get_executions_by_type(rollback_record.EXECUTION_TYPE)
    except mlmd_errors.NotFoundError:
        return []
    found = [Rollback(e.properties["time"].int_value * 1000, str(e.properties["from_version"].int_value),
                      str(e.properties["to_version"].int_value))
             for e in executions if e.last_known_state == metadata_store_pb2.Execution.COMPLETE
             and "time" in e.properties and "to_version" in e.properties]
    return sorted(found, key=lambda r: r.at_ms)


def pushed_versions(store) -> Dict[str, str]:
    """run id -> the version its Pusher recorded as pushed (PushedModel `pushed` = 1), from ML Metadata.

    A Pusher taken from the cache is attributed to the later run too, with the same version."""
    run_type = store.get_context_type(report_store.RUN_CONTEXT_TYPE).id
    runs: Dict[str, str] = {}
    try:
        pushed = store.get_artifacts_by_type(PUSHED_MODEL_TYPE)
    except mlmd_errors.NotFoundError:  # no Pusher has run in this home yet
        return runs
    for artifact in pushed:
        props = artifact.custom_properties
        if PUSHED_KEY not in props or props[PUSHED_KEY].int_value != 1 or PUSHED_VERSION_KEY not in props:
            continue
        for context in store.get_contexts_by_artifact(artifact.id):
            if context.type_id == run_type:
                runs[context.name] = props[PUSHED_VERSION_KEY].string_value
    return runs


def of(view: RunView, serving_before: Optional[str], pushed_version: Optional[str] = None,
       pattern: Optional[str] = None, rollbacks_before: Tuple[Rollback, ...] = ()) -> RunRecord:
    """The record of one run, given the version serving before it (and the version it pushed, if any;
    `pattern`: its ExampleGen's input pattern, which says how its span is named)."""
    if pushed_version is None and view.push is not None:
        pushed_version = view.push.version
    verdict, reason = _verdict(view, serving_before, pushed_version)
    serving_after = pushed_version or serving_before
    metrics = view.overall
    count = metrics.get("example_count")
    number = span(view)
    return RunRecord(
        run_id=view.run_id,
        started_ms=view.started_ms,
        span=number,
        span_label=span_label(number, pattern),
        rows=dict(view.rows),
        auc=metrics.get("auc"),
        accuracy=metrics.get("binary_accuracy"),
        eval_examples=int(count) if count is not None else None,
        bars=report_data.value_bars(view.evaluation_uri) if view.evaluation_uri else {},
        drift=view.drift.features if view.drift is not None else (),
        verdict=verdict,
        reason=reason,
        pushed_version=pushed_version,
        serving_version=serving_after,
        serving_changed=serving_after is not None and serving_after != serving_before,
        rollbacks=rollbacks_before,
    )


def span(view: RunView) -> Optional[int]:
    """The span CsvExampleGen ingested (its Examples artifact's `span`); None when the run recorded none."""
    node = view.nodes.get(EXAMPLE_GEN)
    artifact = node.output("examples") if node is not None else None
    return span_of(artifact) if artifact is not None else None


def span_label(number: Optional[int], pattern: Optional[str]) -> str:
    """The span as its folder names it (pipeline.spans: "span-3", or "2014-01-01" for a dated folder, whose
    span is its day's number since 1970-01-01), given the run's input pattern; a plain folder's span (0) as
    the number; "-" for none."""
    if number is None:
        return "-"
    layout = _layout(pattern)
    return spans.label(number, layout) if layout else str(number)


def _layout(pattern: Optional[str]) -> Optional[str]:
    """The span layout (pipeline.spans.LAYOUTS' pattern) of an ExampleGen input pattern. TFX records the
    pattern resolved for the span it read ("2016-01-01/*", "span-3/*"), so the folder name tells."""
    folder = (pattern or "").split("/")[0]
    for layout, regex in spans.LAYOUTS:
        if folder == layout.split("/")[0] or regex.match(folder):
            return layout
    return None


def input_pattern(store, view: RunView) -> Optional[str]:
    """CsvExampleGen's input pattern ("2016-01-01/*", "span-3/*", "*"), from the `input_config` execution
    property TFX records on the execution that produced the run's Examples; None: not found."""
    node = view.nodes.get(EXAMPLE_GEN)
    artifact = node.output("examples") if node is not None else None
    if artifact is None or not artifact.id:
        return None
    produced = [e.execution_id for e in store.get_events_by_artifact_ids([artifact.id])
                if e.type == metadata_store_pb2.Event.OUTPUT]
    for execution in store.get_executions_by_id(produced):  # a cached artifact has several producers
        if "input_config" in execution.custom_properties:
            try:
                splits = json.loads(execution.custom_properties["input_config"].string_value).get("splits") or [{}]
            except ValueError:
                return None
            return splits[0].get("pattern")
    return None


def _verdict(view: RunView, serving_before: Optional[str], pushed_version: Optional[str]) -> Tuple[str, str]:
    """What the run decided, first what stopped it on purpose, then what its Pusher and Evaluator recorded;
    "failed" only for a run that ended without a verdict (a failed node the run went past, such as a
    resolver that found nothing, does not hide the push that followed)."""
    failed = [n for n, r in view.nodes.items() if r.state == "FAILED"]
    refused_by = [n for n in failed if n in GATES]
    if refused_by:
        return REFUSED, ", ".join(refused_by)
    if pushed_version is not None:
        return (SAME_MODEL, "already serving") if pushed_version == serving_before else (PUSHED, "")
    verdict = view.verdict
    if verdict.evaluator_blessed is False:
        return NOT_BLESSED, verdict.why_not
    if verdict.evaluator_blessed and not verdict.servable:
        return SERVING_CHECK_FAILED, verdict.serving_check.reason if verdict.serving_check else ""
    if failed:
        return FAILED, ", ".join(failed)
    if any(r.state == "RUNNING" for r in view.nodes.values()):
        return RUNNING, ""
    return UNKNOWN, view.push_line()
