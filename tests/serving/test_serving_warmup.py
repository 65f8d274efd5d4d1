"""SavedModel warmup: `assets.extra/tf_serving_warmup_requests` is replayed before a version is AVAILABLE.

The specification is TF Serving's: tensorflow_serving/servables/tensorflow/saved_model_warmup.cc
(which log types run), saved_model_warmup_util.cc (record limit, num_request_iterations, errors) and
their tests saved_model_warmup_test.cc / saved_model_warmup_util_test.cc, whose cases these follow.
The model counts its own signature runs in variables, so a test sees what warmup really ran.
"""
from __future__ import annotations

import logging
import os
import shutil
import time

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import (classification_pb2, get_model_status_pb2, inference_pb2, predict_pb2,
                                     prediction_log_pb2, regression_pb2)

from serving.client import ServingClient
from serving.servables import warmup
from serving.servables.warmup import WarmupOptions
from serving_helpers import config_for, running_server

State = get_model_status_pb2.ModelVersionStatus.State


def export_counting_model(path: str) -> str:
    """TF1 SavedModel whose predict/classify/regress signatures each add 1 to their own call counter.

    serving_default (predict): x float [None, 1] -> y = 2x; classify and regress over tf.Examples with
    feature x; `counts` (predict, no batch dimension): the three counters [predict, classify, regress].
    """
    import tensorflow as tf

    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        counters = {k: v1.Variable(0.0, name=f"{k}_calls", dtype=tf.float32) for k in ("predict", "classify", "regress")}
        x = v1.placeholder(tf.float32, [None, 1], name="x")
        serialized = v1.placeholder(tf.string, [None], name="tf_example")
        x_examples = tf.io.parse_example(serialized, {"x": tf.io.FixedLenFeature([1], tf.float32)})["x"]
        with tf.control_dependencies([v1.assign_add(counters["predict"], 1.0)]):
            y = tf.identity(2.0 * x)
        with tf.control_dependencies([v1.assign_add(counters["classify"], 1.0)]):
            p = tf.sigmoid(x_examples)
            scores = tf.concat([p, 1.0 - p], axis=1)
        with tf.control_dependencies([v1.assign_add(counters["regress"], 1.0)]):
            regressed = tf.identity(2.0 * x_examples)
        dummy = v1.placeholder(tf.float32, [None], name="dummy")
        counts = tf.stack([counters["predict"].read_value(), counters["classify"].read_value(),
                           counters["regress"].read_value()]) + 0.0 * tf.reduce_sum(dummy)
        utils = v1.saved_model.signature_def_utils
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            builder = v1.saved_model.Builder(path)
            builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map={
                "serving_default": utils.predict_signature_def({"x": x}, {"y": y}),
                "classify": utils.classification_signature_def(serialized, tf.constant([["a", "b"]]), scores),
                "regress": utils.regression_signature_def(serialized, regressed),
                "counts": utils.predict_signature_def({"dummy": dummy}, {"counts": counts}),
            })
            builder.save()
    return path


def _example(x: float) -> bytes:
    import tensorflow as tf

    return tf.train.Example(features=tf.train.Features(feature={
        "x": tf.train.Feature(float_list=tf.train.FloatList(value=[x]))})).SerializeToString()


def predict_log(x=1.0, input_name="x"):
    request = predict_pb2.PredictRequest()
    request.model_spec.signature_name = "serving_default"  # no model name: TF Serving's own test records
    request.inputs[input_name].CopyFrom(_tensor([[x]]))
    return prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))


def _tensor(value):
    import tensorflow as tf

    return tf.make_tensor_proto(np.array(value, dtype=np.float32))


def classify_log(x=0.5):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "counting"
    request.model_spec.signature_name = "classify"
    request.input.example_list.examples.add().ParseFromString(_example(x))
    return prediction_log_pb2.PredictionLog(classify_log=prediction_log_pb2.ClassifyLog(request=request))


def regress_log(x=0.5):
    request = regression_pb2.RegressionRequest()
    request.model_spec.signature_name = "regress"
    request.input.example_list.examples.add().ParseFromString(_example(x))
    return prediction_log_pb2.PredictionLog(regress_log=prediction_log_pb2.RegressLog(request=request))


def multi_inference_log(x=0.5):
    request = inference_pb2.MultiInferenceRequest()
    for signature, method in (("classify", "tensorflow/serving/classify"), ("regress", "tensorflow/serving/regress")):
        task = request.tasks.add()
        task.model_spec.name = "counting"
        task.model_spec.signature_name = signature
        task.method_name = method
    request.input.example_list.examples.add().ParseFromString(_example(x))
    return prediction_log_pb2.PredictionLog(
        multi_inference_log=prediction_log_pb2.MultiInferenceLog(request=request))


def write_warmup(version_dir, records):
    """A TFRecord file of PredictionLogs (or raw bytes records), as TFX's InfraValidator writes it."""
    import tensorflow as tf

    path = warmup.requests_path(str(version_dir))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for record in records:
            writer.write(record if isinstance(record, bytes) else record.SerializeToString())
    return path


@pytest.fixture(scope="module")
def counting_version(tmp_path_factory):
    return export_counting_model(str(tmp_path_factory.mktemp("counting") / "1"))


def _model(tmp_path, counting_version, records=None, version=1):
    base = tmp_path / "counting"
    shutil.copytree(counting_version, base / str(version))
    if records is not None:
        write_warmup(base / str(version), records)
    return base


def _counts(client, version=None):
    outputs, _ = client.predict("counting", {"dummy": np.zeros([1], np.float32)}, "counts", version=version)
    return dict(zip(("predict", "classify", "regress"), outputs["counts"].astype(int).tolist()))


class _StateAtLog(logging.Handler):
    """Records, for each serving log line, the state the version was in when the line was written."""

    def __init__(self):
        super().__init__()
        self.server = None
        self.seen = []

    def emit(self, record):
        from tensorflow_serving.apis import model_pb2

        if self.server is None:
            return
        try:
            states = {s.version: State.Name(s.state) for s in
                      self.server.manager.status(model_pb2.ModelSpec(name="counting"))}
        except Exception:  # noqa: BLE001  (no version known yet)
            states = {}
        self.seen.append((record.getMessage(), states))


@pytest.mark.parametrize("iterations", [1, 2])
def test_every_log_type_is_replayed_before_the_version_is_available(tmp_path, counting_version, iterations):
    # saved_model_warmup_test.cc MixedWarmupData: predict, classify, regress and multi_inference records,
    # each run num_request_iterations times.
    records = [predict_log(1.0), predict_log(2.0), predict_log(3.0), classify_log(), classify_log(), regress_log(),
               multi_inference_log(), prediction_log_pb2.PredictionLog()]  # the last has no log type: skipped
    base = _model(tmp_path, counting_version, records)
    watcher = _StateAtLog()
    log = logging.getLogger("serving")
    log.addHandler(watcher)
    old_level = log.level
    log.setLevel(logging.INFO)
    try:
        from serving.model_servers.server import ModelServer, ServerOptions

        server = ModelServer(ServerOptions(config=config_for(counting=str(base)), grpc_port=0, rest_port=None,
                                           poll_wait_s=0, warmup=WarmupOptions(num_request_iterations=iterations)))
        watcher.server = server
        try:
            server.start()
            assert server.wait_until_available("counting", 60)
            with ServingClient(f"127.0.0.1:{server.grpc_port}") as client:
                counts = _counts(client)
                client.predict("counting", {"x": np.ones([1, 1], np.float32)})
                after_one = _counts(client)
        finally:
            server.stop()
    finally:
        log.removeHandler(watcher)
        log.setLevel(old_level)
    assert counts == {"predict": 3 * iterations, "classify": 3 * iterations, "regress": 2 * iterations}
    assert after_one["predict"] == counts["predict"] + 1  # real requests run the same signature afterwards
    done = [(message, states) for message, states in watcher.seen if "warmup done" in message]
    assert len(done) == 1
    message, states = done[0]
    assert f"8 record(s), {7 * iterations} request(s)" in message
    assert states == {1: "LOADING"}  # logged before the version became AVAILABLE
    assert any(states.get(1) == "AVAILABLE" for _, states in watcher.seen[watcher.seen.index(done[0]):])


def test_no_file_or_an_empty_file_loads_without_warmup(tmp_path, counting_version):
    # saved_model_warmup_util_test.cc NoWarmupDataFile, WarmupDataFileEmpty.
    base = _model(tmp_path, counting_version)
    shutil.copytree(counting_version, base / "2")
    write_warmup(base / "2", [])
    config = config_for(counting=str(base))
    config.model_config_list.config[0].model_version_policy.all.SetInParent()
    with running_server(config, rest_port=None) as server:
        assert server.wait_until_available("counting", 60, version=1)
        assert server.wait_until_available("counting", 60, version=2)
        with ServingClient(f"127.0.0.1:{server.grpc_port}") as client:
            assert _counts(client, 1) == _counts(client, 2) == {"predict": 0, "classify": 0, "regress": 0}


def test_warmup_can_be_turned_off(tmp_path, counting_version):
    base = _model(tmp_path, counting_version, [predict_log()] * 5)
    with running_server(config_for(counting=str(base)), wait_for=["counting"], rest_port=None,
                        warmup=WarmupOptions(enabled=False)) as server:
        with ServingClient(f"127.0.0.1:{server.grpc_port}") as client:
            assert _counts(client)["predict"] == 0


def test_warmup_runs_through_the_batcher_when_batching_is_on(tmp_path, counting_version):
    from serving.batching import batcher as batching

    base = _model(tmp_path, counting_version, [predict_log()] * 4)
    with running_server(config_for(counting=str(base)), wait_for=["counting"], rest_port=None,
                        batching=batching.BatchingOptions(max_batch_size=8, batch_timeout_micros=0)) as server:
        with ServingClient(f"127.0.0.1:{server.grpc_port}") as client:
            assert _counts(client)["predict"] == 4


def _not_tfrecord(version_dir):
    # saved_model_warmup_util_test.cc UnsupportedFileFormat: serialized protos, not TFRecord framing.
    path = warmup.requests_path(str(version_dir))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(predict_log().SerializeToString() * 10)


def _session_run_log():
    log = prediction_log_pb2.PredictionLog()
    log.session_run_log.SetInParent()
    return log


MALFORMED = {
    "not_tfrecord": (_not_tfrecord, grpc.StatusCode.DATA_LOSS, "Please verify your warmup data is in TFRecord format"),
    "unparsable_record": ([b"malformed_record"], grpc.StatusCode.INVALID_ARGUMENT, "Failed to parse warmup record"),
    "too_many_records": ([predict_log()] * (warmup.MAX_RECORDS + 1), grpc.StatusCode.INVALID_ARGUMENT,
                         "Number of warmup records exceeds the maximum (1000)"),
    "session_run_log": ([_session_run_log()], grpc.StatusCode.UNIMPLEMENTED, "Unsupported log_type for warmup"),
    "failing_request": ([predict_log(input_name="wrong")], grpc.StatusCode.INVALID_ARGUMENT, "wrong"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_bad_warmup_file_keeps_the_new_version_from_serving(tmp_path, counting_version, case):
    records, code, message = MALFORMED[case]
    base = _model(tmp_path, counting_version)
    with running_server(config_for(counting=str(base)), wait_for=["counting"], rest_port=None, poll_wait_s=0.1,
                        max_load_retries=0) as server:
        shutil.copytree(counting_version, tmp_path / "staged")
        if callable(records):
            records(tmp_path / "staged")
        else:
            write_warmup(tmp_path / "staged", records)
        os.rename(tmp_path / "staged", base / "2")  # pushed atomically, as the Pusher does
        assert server.manager.wait_until_settled(60)
        with ServingClient(f"127.0.0.1:{server.grpc_port}") as client:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and len(client.status("counting")) < 2:
                time.sleep(0.05)
            assert server.manager.wait_until_settled(60)
            statuses = {s.version: s for s in client.status("counting")}
            assert statuses[2].state == State.END
            assert statuses[2].status.error_code == code.value[0]
            assert message in statuses[2].status.error_message
            assert "warmup" in statuses[2].status.error_message
            assert statuses[1].state == State.AVAILABLE
            _, response = client.predict("counting", {"x": np.ones([1, 1], np.float32)})
            assert response.model_spec.version.value == 1  # the old version keeps serving


@pytest.mark.parametrize("signature_name", ["", "serving_default"])
def test_after_warmup_the_first_real_predict_takes_the_warmed_path(tmp_path, counting_version, monkeypatch,
                                                                    signature_name):
    """Warmup records name `serving_default` (TFX's InfraValidator and our ServingValidator write them so);
    a client that names no signature asks for the same signature (predict_util.cc), so its first real
    Predict must find what warmup prepared instead of running every request check again (the grpc.aio
    front end's per-version plan; the first request to a new version was 1.05x the median before)."""
    from serving.servables import handlers

    if os.environ.get("SERVING_TEST_GRPC_AIO", "1") != "1":
        pytest.skip("the per-version request plan is the grpc.aio front end's")
    base = _model(tmp_path, counting_version, [predict_log()] * 3)
    with running_server(config_for(counting=str(base)), wait_for=["counting"], rest_port=None) as server:
        prepared = []
        original = handlers.predict_prepare
        monkeypatch.setattr(handlers, "predict_prepare", lambda *a, **k: prepared.append(a) or original(*a, **k))
        with ServingClient(f"127.0.0.1:{server.grpc_port}") as client:
            outputs, response = client.predict("counting", {"x": np.full([1, 1], 3.0, np.float32)}, signature_name)
        assert outputs["y"].tolist() == [[6.0]]
        assert response.model_spec.signature_name == "serving_default"
        assert prepared == []  # served from the plan the warmup records made
