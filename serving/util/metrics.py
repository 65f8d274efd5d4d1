"""TF Serving's monitoring metrics, exported in the Prometheus text format as TF Serving exports them.

TF Serving records its metrics in TensorFlow's monitoring registry and `PrometheusExporter`
(tensorflow_serving/util/prometheus_exporter.cc) writes them out: the metric name with every
character outside `[a-zA-Z0-9_]` turned into `:` (`/tensorflow/serving/request_count` becomes
`:tensorflow:serving:request_count`), counters as `counter` (no `_total` suffix), samplers as
`histogram` with cumulative `_bucket{le=...}` lines (the last one `+Inf`), `_sum` and `_count`.
The names, labels and buckets below are TF Serving's own:

| metric | labels | recorded (TF Serving source) |
| --- | --- | --- |
| /tensorflow/serving/request_count | model_name, status | every gRPC Predict/Classify/Regress and every REST /v1/ request (servables/tensorflow/util.cc, model_servers/prediction_service_impl.cc, http_server.cc) |
| /tensorflow/serving/request_latency (us) | model_name, API, entrypoint | the same requests when OK; entrypoint GRPC or REST, API the RPC name or the REST verb |
| /tensorflow/serving/runtime_latency (us) | model_name, API, runtime | the Session run of Predict/Classify/Regress (predict_util.cc, classifier.cc, regressor.cc), warmup included; runtime TF1 |
| /tensorflow/cc/saved_model/load_attempt_count | model_path, status | each SavedModel load, status success or fail (tensorflow/cc/saved_model/loader.cc) |
| /tensorflow/cc/saved_model/load_latency (us) | model_path | successful loads (same file) |
| /tensorflow/serving/model_warmup_latency (us) | model_path, status | each warmup run (servables/tensorflow/saved_model_warmup_util.cc) |
| /tensorflow/serving/model_warmup_records_read | model_path, status | records replayed by it |

TF Serving has no per-signature request metric and no model-version-state metric; the stand-in
adds two, outside TensorFlow's namespace: `standin_serving_request_count{model_name, API,
signature_name, entrypoint, status}` and `standin_serving_model_version_state{model_name, version,
state}` (1 for each version's current ModelVersionStatus state, read from the manager at scrape time).
"""
from __future__ import annotations

import bisect
import contextvars
import re
import threading
import time
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

DEFAULT_PATH = "/monitoring/prometheus/metrics"  # PrometheusExporter::kPrometheusPath
# monitoring::Buckets::Exponential(10, 1.8, 33): limits 10 * 1.8**i, then DBL_MAX (printed as +Inf).
LATENCY_BUCKETS = tuple(10.0 * 1.8 ** i for i in range(33))

# The API a Session run belongs to (Predict, Classify, Regress), set by whoever starts the request
# (a front end, or warmup) so the servable's run can label runtime_latency as TF Serving does.
current_api: contextvars.ContextVar[str] = contextvars.ContextVar("serving_api", default="Predict")


def with_api(api: Optional[str], fn, *args):
    """`fn(*args)` with its Session runs labelled `api` in runtime_latency (`None`: as they are)."""
    if api is None:
        return fn(*args)
    token = current_api.set(api)
    try:
        return fn(*args)
    finally:
        current_api.reset(token)


def prometheus_name(name: str) -> str:
    """GetPrometheusMetricName: every character outside [a-zA-Z0-9_] becomes ':'."""
    new = re.sub(r"[^a-zA-Z0-9_]", ":", name)
    return "_" + new if new[:1].isdigit() else new


def _label_value(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{re.sub(r"[^a-zA-Z0-9]", "_", n)}="{_label_value(v)}"' for n, v in zip(names, values)]
    if extra:
        parts.append(extra)
    return ",".join(parts)


def _number(value: float) -> str:
    """absl::StrCat of a double: six significant digits."""
    return "%.6g" % value


class Counter:
    def __init__(self, name: str, help_text: str, label_names: Sequence[str]):
        self.name, self.help, self.label_names = name, help_text, tuple(label_names)
        self._values: Dict[Tuple[str, ...], int] = {}
        self._lock = threading.Lock()

    def inc(self, labels: Tuple[str, ...], amount: int = 1) -> None:
        with self._lock:
            self._values[labels] = self._values.get(labels, 0) + amount

    def value(self, labels: Tuple[str, ...]) -> int:
        with self._lock:
            return self._values.get(labels, 0)

    def lines(self) -> List[str]:
        with self._lock:
            items = sorted(self._values.items())
        if not items:
            return []
        name = prometheus_name(self.name)
        return [f"# TYPE {name} counter"] + [
            f"{name}{{{_labels(self.label_names, labels)}}} {value}" for labels, value in items]


class Histogram:
    """A TensorFlow Sampler: bucket i holds values below limit i (the last limit is +Inf)."""

    def __init__(self, name: str, help_text: str, label_names: Sequence[str],
                 limits: Sequence[float] = LATENCY_BUCKETS):
        self.name, self.help, self.label_names = name, help_text, tuple(label_names)
        self.limits = tuple(limits)
        self._cells: Dict[Tuple[str, ...], list] = {}  # labels -> [bucket counts..., sum]
        self._lock = threading.Lock()

    def observe(self, labels: Tuple[str, ...], value: float) -> None:
        index = bisect.bisect_right(self.limits, value)
        with self._lock:
            cell = self._cells.get(labels)
            if cell is None:
                cell = self._cells[labels] = [0] * (len(self.limits) + 1) + [0.0]
            cell[index] += 1
            cell[-1] += value

    def count(self, labels: Tuple[str, ...]) -> int:
        with self._lock:
            cell = self._cells.get(labels)
            return sum(cell[:-1]) if cell else 0

    def lines(self) -> List[str]:
        with self._lock:
            items = sorted((labels, list(cell)) for labels, cell in self._cells.items())
        if not items:
            return []
        name = prometheus_name(self.name)
        out = [f"# TYPE {name} histogram"]
        bounds = [_number(b) for b in self.limits] + ["+Inf"]
        for labels, cell in items:
            cumulative = 0
            for bound, count in zip(bounds, cell[:-1]):
                cumulative += count
                le = 'le="%s"' % bound
                out.append(f"{name}_bucket{{{_labels(self.label_names, labels, le)}}} {cumulative}")
            out.append(f"{name}_sum{{{_labels(self.label_names, labels)}}} {_number(cell[-1])}")
            out.append(f"{name}_count{{{_labels(self.label_names, labels)}}} {cumulative}")
        return out


class ServingMetrics:
    """The model server's metrics; `render()` is the page served at the Prometheus path."""

    def __init__(self, version_states: Optional[Callable[[], Iterable[Tuple[str, int, str]]]] = None):
        """`version_states()` -> (model name, version, state name) for every known version, read at
        scrape time (None: no version gauge)."""
        self.request_count = Counter("/tensorflow/serving/request_count", "The total number of requests.",
                                     ("model_name", "status"))
        self.request_latency = Histogram(
            "/tensorflow/serving/request_latency",
            "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            ("model_name", "API", "entrypoint"))
        self.runtime_latency = Histogram(
            "/tensorflow/serving/runtime_latency", "Distribution of wall time (in microseconds) for Tensorflow runtime.",
            ("model_name", "API", "runtime"))
        self.load_attempt_count = Counter("/tensorflow/cc/saved_model/load_attempt_count",
                                          "The number of times a SavedModel was successfully loaded.",
                                          ("model_path", "status"))
        self.load_latency = Counter("/tensorflow/cc/saved_model/load_latency",
                                    "Latency in microseconds for SavedModels that were successfully loaded.",
                                    ("model_path",))
        self.warmup_latency = Histogram("/tensorflow/serving/model_warmup_latency",
                                        "Distribution of wall time (in microseconds) for warming up the model.",
                                        ("model_path", "status"))
        self.warmup_records_read = Counter("/tensorflow/serving/model_warmup_records_read",
                                           "Total number of warmup records read during model warmup.",
                                           ("model_path", "status"))
        self.signature_request_count = Counter(
            "standin_serving_request_count", "Requests by model, API, signature, entrypoint and status (stand-in only).",
            ("model_name", "API", "signature_name", "entrypoint", "status"))
        self._metrics = [self.request_count, self.request_latency, self.runtime_latency, self.load_attempt_count,
                         self.load_latency, self.warmup_latency, self.warmup_records_read,
                         self.signature_request_count]
        self._version_states = version_states

    # -- recording -------------------------------------------------------------------------
    def record_request(self, model_name: str, api: str, signature_name: str, entrypoint: str, status: str,
                       started: float) -> None:
        """One request as TF Serving counts it: count by status; latency (us) only when OK."""
        if status == "OK":
            self.request_latency.observe((model_name, api, entrypoint), (time.perf_counter() - started) * 1e6)
        self.request_count.inc((model_name, status))
        self.signature_request_count.inc((model_name, api, signature_name, entrypoint, status))

    def record_runtime(self, model_name: str, started: float) -> None:
        self.runtime_latency.observe((model_name, current_api.get(), "TF1"), (time.perf_counter() - started) * 1e6)

    def record_load(self, model_path: str, ok: bool, seconds: float) -> None:
        self.load_attempt_count.inc((model_path, "success" if ok else "fail"))
        if ok:
            self.load_latency.inc((model_path,), int(seconds * 1e6))

    def record_warmup(self, model_path: str, status: str, records: int, seconds: float) -> None:
        self.warmup_latency.observe((model_path, status), seconds * 1e6)
        self.warmup_records_read.inc((model_path, status), records)

    # -- exposition ------------------------------------------------------------------------
    def render(self) -> str:
        lines: List[str] = []
        for metric in self._metrics:
            lines.extend(metric.lines())
        if self._version_states is not None:
            states = sorted(self._version_states())
            if states:
                lines.append("# TYPE standin_serving_model_version_state gauge")
                names = ("model_name", "version", "state")
                lines.extend(f"standin_serving_model_version_state{{{_labels(names, (m, str(v), s))}}} 1"
                             for m, v, s in states)
        return "\n".join(lines) + "\n"
