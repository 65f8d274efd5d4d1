"""Which model versions are loaded, and which one answers a request.

Mirrors TF Serving's AspiredVersionsManager with a file-system source: each model's base path is
polled; the version policy picks the aspired versions; a new version loads in the background and
becomes AVAILABLE only when fully loaded; a version leaving the aspired set is unloaded only once
an aspired version is serving (availability preserving), after its in-flight requests finish.
So a version pushed while clients send traffic swaps in with no failed request.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from concurrent import futures
from typing import Callable, Dict, List, Optional

import grpc
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.config import model_server_config_pb2

from serving.config import model_config
from serving.core.request_logger import RequestLoggingError, ServerRequestLogger
from serving.util.errors import ServingError, error_code_number, failed_precondition, invalid_argument, not_found

log = logging.getLogger("serving")
State = get_model_status_pb2.ModelVersionStatus.State

# TF Serving's AspiredVersionsManager acts on its state-management thread every
# `manage_state_interval_micros` (100 ms by default, aspired_versions_manager.h; ServerCore keeps the
# default), so a version replaced by a newly AVAILABLE one starts unloading at that thread's next tick,
# up to 100 ms later. Unloading at once instead puts the old version's teardown (its Session's close,
# 10-22 ms of CPU, and the freeing of its graph under the GIL, 17-25 ms) beside the new version's first
# requests. `python -m bench.serving_warmup --home <default run> --scenario new-version` (a request every
# 50 ms): first request to the new version / median 1.06 and 0.95 (12 rounds each) unloading at once, 0.99
# (16 rounds, 6 slower) at the tick. The teardown still lands on a request: the second or third (the
# second request's ratio 1.08, 2.0-2.7x in 3 of 16 rounds), as it does in TF Serving's timing.
MANAGE_STATE_INTERVAL_S = 0.1


@dataclasses.dataclass
class _Version:
    version: int
    state: int = State.START
    servable: object = None
    error: Optional[ServingError] = None
    failures: int = 0
    next_attempt: float = 0.0
    path: str = ""


@dataclasses.dataclass
class _Model:
    config: model_server_config_pb2.ModelConfig
    versions: Dict[int, _Version] = dataclasses.field(default_factory=dict)
    warned_empty: bool = False


class _Held:
    """Context manager releasing a servable acquired by `_resolve` (cheaper than @contextmanager)."""

    __slots__ = ("servable",)

    def __init__(self, servable):
        self.servable = servable

    def __enter__(self):
        return self.servable

    def __exit__(self, *exc):
        self.servable.release()


@dataclasses.dataclass(frozen=True)
class ManagerOptions:
    """What the manager is built with: the part of TF Serving's ServerCore::Options the stand-in has
    (tensorflow_serving/model_servers/server_core.h:93-210 at 2.16.1; model_servers/server.cc:201-320
    fills it from the flags). `loader` takes the place of platform_config_map (how a version loads);
    `enable_signature_method_name_check` is a process-wide feature in TF Serving (server.cc:201), one
    server's setting here, read by the request handlers from the manager they are given."""

    config: model_server_config_pb2.ModelServerConfig
    loader: Callable  # (name, version, path) -> servable with acquire/release/close
    poll_wait_s: float = 1.0
    max_load_retries: int = 5
    load_retry_interval_s: float = 60.0
    allow_version_labels_for_unavailable_models: bool = False
    enable_signature_method_name_check: bool = False
    # ServerCore::Options.server_request_logger: each model's logging_config (serving.core.request_logger),
    # updated on every config reload. None: no request is logged.
    request_logger: Optional[ServerRequestLogger] = None


class ModelManager:
    """Loads, serves and unloads model versions per a ModelServerConfig."""

    def __init__(self, options: ManagerOptions):
        model_config.validate(options.config)
        self._loader = options.loader
        self._poll_wait_s = options.poll_wait_s
        self._max_load_retries = options.max_load_retries
        self._retry_interval_s = options.load_retry_interval_s
        self._allow_unavailable_labels = options.allow_version_labels_for_unavailable_models
        self.enable_signature_method_name_check = options.enable_signature_method_name_check
        self.request_logger = options.request_logger
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._models: Dict[str, _Model] = {m.name: _Model(m) for m in options.config.model_config_list.config}
        self._pool = futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-load")
        self._stop = threading.Event()
        self._poll_thread: Optional[threading.Thread] = None

    # -- life cycle ------------------------------------------------------------------------
    def start(self) -> None:
        self.poll_once()
        if self._poll_wait_s > 0:
            self._poll_thread = threading.Thread(target=self._poll_loop, name="model-poll", daemon=True)
            self._poll_thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._poll_thread is not None:
            self._poll_thread.join(timeout=10)
        self._pool.shutdown(wait=True)
        with self._lock:
            records = [v for m in self._models.values() for v in m.versions.values() if v.servable is not None]
            for record in records:
                record.state = State.UNLOADING
        for record in records:
            self._unload(record)

    def _submit(self, fn, *args) -> None:
        try:
            self._pool.submit(fn, *args)
        except RuntimeError:  # shutting down: stop() unloads what is left
            pass

    def _poll_loop(self) -> None:
        while not self._stop.wait(self._poll_wait_s):
            self._manage_state()

    def poll_once(self) -> None:
        """Scan every base path and converge loaded versions towards the aspired ones."""
        with self._lock:
            models = list(self._models.values())
        for model in models:
            on_disk = model_config.versions_on_disk(model.config.base_path)
            aspired = model_config.aspired_versions(model.config, on_disk)
            self._converge(model, aspired, on_disk)

    def _converge(self, model: _Model, aspired, on_disk: Dict[int, str]) -> None:
        any_on_disk = bool(on_disk)
        to_unload = []
        now = time.monotonic()
        with self._lock:
            if not any_on_disk and not model.warned_empty:
                log.warning("No versions of model %s found under base path %s", model.config.name,
                            model.config.base_path)
                model.warned_empty = True
            elif any_on_disk:
                model.warned_empty = False
            for version in sorted(aspired):
                record = model.versions.get(version)
                unloaded = record is not None and record.state == State.END and record.servable is None
                if record is None or (unloaded and record.error is None) or (
                        unloaded and record.failures <= self._max_load_retries and now >= record.next_attempt):
                    # New; or unloaded earlier and aspired again; or failed and due for a retry.
                    if record is None:
                        record = model.versions[version] = _Version(version)
                    record.path = on_disk[version]
                    record.state = State.LOADING
                    self._submit(self._load, model, record)
            serving_aspired = any(model.versions[v].state == State.AVAILABLE for v in aspired if v in model.versions)
            for version, record in model.versions.items():
                if version in aspired or record.state != State.AVAILABLE:
                    continue
                # Availability preserving: an old version goes only once an aspired one serves (or
                # nothing is aspired any more); a new version that fails to load leaves it serving.
                if serving_aspired or not aspired:
                    record.state = State.UNLOADING
                    to_unload.append(record)
            self._changed.notify_all()
        for record in to_unload:
            self._submit(self._unload, record, model.config.name)

    def _manage_state(self) -> None:
        """One poll from the poll loop or a state tick; logged, not raised: one bad scan must not stop
        version updates (the next poll converges again)."""
        if self._stop.is_set():
            return  # stop() unloads what is left
        try:
            self.poll_once()
        except Exception:  # noqa: BLE001
            log.exception("model poll failed")

    def _load(self, model: _Model, record: _Version) -> None:
        name, path = model.config.name, record.path
        started = time.monotonic()
        try:
            servable = self._loader(name, record.version, path)
        except Exception as err:  # a broken or half-written version: report it, retry later
            error = _load_error(err, path)
            with self._lock:
                record.failures += 1
                record.state = State.END
                record.error = error
                record.next_attempt = time.monotonic() + self._retry_interval_s
                self._changed.notify_all()
            log.warning("Failed to load model %s version %d (attempt %d): %s", name, record.version,
                        record.failures, record.error.message)
            return
        with self._lock:
            record.servable, record.state, record.error = servable, State.AVAILABLE, None
            still_configured = self._models.get(name) is model
            self._changed.notify_all()
        log.info("Loaded model %s version %d in %.1fs", name, record.version, time.monotonic() - started)
        if still_configured:
            # Unload what the new version replaces at the next state tick, not the next file-system poll.
            timer = threading.Timer(MANAGE_STATE_INTERVAL_S, self._manage_state)
            timer.daemon = True
            timer.start()
        else:
            with self._lock:
                record.state = State.UNLOADING
            self._unload(record, name)

    def _unload(self, record: _Version, name: str = "") -> None:
        servable = record.servable
        if servable is not None:
            servable.close()
        with self._lock:
            record.servable = None
            record.state = State.END
            self._changed.notify_all()
        if servable is not None:
            log.info("Unloaded model %s version %d", name or getattr(servable, "name", "?"), record.version)

    # -- requests --------------------------------------------------------------------------
    def servable(self, model_spec) -> "_Held":
        """The servable a ModelSpec names, held (not unloaded) until the `with` block ends."""
        return _Held(self._resolve(model_spec))

    def _resolve(self, model_spec):
        name = model_spec.name
        if not name:  # server_core.cc ServableRequestFromModelSpec
            raise invalid_argument("ModelSpec has no name specified.")
        with self._lock:
            model = self._models.get(name)
            choice = model_spec.WhichOneof("version_choice")
            if choice == "version":
                version = model_spec.version.value
            elif choice == "version_label":
                label = model_spec.version_label
                if model is None or label not in model.config.version_labels:
                    raise invalid_argument(f"Unrecognized servable version label: {label}")
                version = model.config.version_labels[label]
            else:
                version = None
            record = None
            if model is not None:
                if version is None:
                    available = [v for v, r in model.versions.items() if r.state == State.AVAILABLE]
                    record = model.versions[max(available)] if available else None
                else:
                    record = model.versions.get(version)
            if record is None or record.state != State.AVAILABLE or not record.servable.acquire():
                request = f"Latest({name})" if version is None else f"Specific({name}, {version})"
                raise not_found(f"Servable not found for request: {request}")
            return record.servable

    def status(self, model_spec) -> List[get_model_status_pb2.ModelVersionStatus]:
        """GetModelStatus: every known version of the model, or the one asked for."""
        name = model_spec.name
        with self._lock:
            model = self._models.get(name)
            versions = model.versions if model is not None else {}
            # get_model_status_impl.cc looks at the version only: a version label is not resolved
            # (a request with one gets every version, as one with neither does).
            if model_spec.WhichOneof("version_choice") == "version":
                wanted = [model_spec.version.value]
            elif not versions:
                raise not_found(f"Could not find any versions of model {name}")
            else:
                wanted = sorted(versions, reverse=True)
            result = []
            for version in wanted:
                record = versions.get(version)
                if record is None:
                    raise not_found(f"Could not find version {version} of model {name}")
                status = get_model_status_pb2.ModelVersionStatus(version=version, state=record.state)
                status.status.SetInParent()  # TF Serving always reports a status (OK when fine)
                if record.error is not None:
                    status.status.error_code = error_code_number(record.error.code)
                    status.status.error_message = record.error.message
                result.append(status)
            return result

    def model_names(self) -> List[str]:
        with self._lock:
            return sorted(self._models)

    def wait_until_available(self, name: str, timeout_s: float, version: Optional[int] = None) -> bool:
        def ready():
            model = self._models.get(name)
            return model is not None and any(
                r.state == State.AVAILABLE and (version is None or v == version) for v, r in model.versions.items())

        with self._lock:
            return self._changed.wait_for(ready, timeout=timeout_s)

    def wait_until_settled(self, timeout_s: float) -> bool:
        """True once no version of any model is still starting or loading (initial load done)."""
        def settled():
            return all(r.state not in (State.START, State.LOADING)
                       for m in self._models.values() for r in m.versions.values())

        with self._lock:
            return self._changed.wait_for(settled, timeout=timeout_s)

    # -- configuration ---------------------------------------------------------------------
    def reload_config(self, config: model_server_config_pb2.ModelServerConfig) -> None:
        """HandleReloadConfigRequest: new models load, removed ones unload, policies/labels and request
        logging update."""
        try:
            model_config.validate(config, "reload request")
        except model_config.ConfigError as err:
            raise invalid_argument(str(err)) from None
        new = {m.name: m for m in config.model_config_list.config}
        to_unload = []
        with self._lock:
            for name, model_cfg in new.items():
                model = self._models.get(name)
                if not self._allow_unavailable_labels:
                    for label, version in model_cfg.version_labels.items():
                        record = model.versions.get(version) if model else None
                        if record is None or record.state != State.AVAILABLE:
                            raise failed_precondition(
                                f"Request to assign label to version {version} of model {name}, which is not "
                                "currently available for inference")
            for name in list(self._models):
                if name not in new:
                    removed = self._models.pop(name)
                    for record in removed.versions.values():
                        if record.state == State.AVAILABLE:
                            record.state = State.UNLOADING
                            to_unload.append((record, name))
            for name, model_cfg in new.items():
                if name in self._models:
                    self._models[name].config = model_cfg
                else:
                    self._models[name] = _Model(model_cfg)
        for record, name in to_unload:
            self._submit(self._unload, record, name)
        self.poll_once()
        if self.request_logger is not None:  # ServerCore::ReloadConfig updates the request loggers too
            try:
                self.request_logger.update(config)
            except RequestLoggingError as err:
                raise invalid_argument(str(err)) from None


def _load_error(err: Exception, path: str) -> ServingError:
    """The status a failed load reports in GetModelStatus: TensorFlow's own status (code and first
    line, as TF Serving reports its loader's status); anything else UNKNOWN with no Python text
    (the trace goes to the server log)."""
    import tensorflow as tf

    if isinstance(err, ServingError):  # e.g. a failed warmup: its own status code, as in TF Serving
        first = err.message.splitlines()[0] if err.message else ""
        return ServingError(err.code, f"failed to load {path}: {first}")
    if isinstance(err, tf.errors.OpError):
        code = {c.value[0]: c for c in grpc.StatusCode}.get(err.error_code, grpc.StatusCode.UNKNOWN)
        first = err.message.splitlines()[0] if err.message else ""
        return ServingError(code, f"failed to load {path}: {first}")
    log.error("loading %s failed", path, exc_info=(type(err), err, err.__traceback__))
    return ServingError(grpc.StatusCode.UNKNOWN, f"failed to load {path} (details in the server log)")
