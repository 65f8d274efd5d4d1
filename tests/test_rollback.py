"""`taxi-pipeline rollback` (issue 24, acceptance 4): rollback under load, and what ML Metadata then says.

Clients send requests without pause to a model server polling `<home>/serving/taxi` while `rollback`
runs in its own process: no request fails, the answers (their model_spec.version and probabilities)
switch from the newest version's to the previous one's and never go back, and afterwards TFX's own
LatestBlessedModelStrategy, run on the store's artifacts, resolves the model now served.

The fast tests serve small sample models (serving/testing/sample_models.py) under ML Metadata records
written as a run writes them (`_record_runs`: the Trainer's Model, the Evaluator's ModelBlessing with
`current_model_id`, the ServingValidator's InfraBlessing, the Pusher's PushedModel with
`pushed_version`). The slow one does the same with two real pipeline runs, then runs the pipeline a
third time and checks that its resolver and its Evaluator took the served model as the baseline.
"""
from __future__ import annotations

import contextlib
import csv
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pipeline import cli, configs, rollback_record

REPO = Path(__file__).resolve().parents[1]
MODEL = configs.MODEL_NAME


# -- ML Metadata as a run writes it ----------------------------------------------------------------

def _record_runs(metadata_path: Path, runs):
    """One pipeline run per entry of `runs`: (model key, pushed version or None, evaluator blessed).

    A key seen before is the same Model artifact again (a Trainer taken from the cache). A run with no
    version was blessed by the Evaluator but failed the serving check, so the Pusher pushed nothing.
    Returns model key -> Model artifact id.
    """
    from ml_metadata import metadata_store
    from ml_metadata.proto import metadata_store_pb2 as pb

    config = pb.ConnectionConfig()
    config.sqlite.filename_uri = str(metadata_path)
    config.sqlite.connection_mode = pb.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
    store = metadata_store.MetadataStore(config)
    types = {name: store.put_artifact_type(pb.ArtifactType(name=name))
             for name in ("Model", "ModelBlessing", "InfraBlessing", "PushedModel")}
    executions = {name: store.put_execution_type(pb.ExecutionType(name=name)) for name in (
        "components.multiworker_trainer.component.Trainer", "components.reusing_evaluator.ReusingEvaluator",
        "components.serving_validator.ServingValidator", "tfx.components.pusher.component.Pusher")}
    pipeline_type = store.put_context_type(pb.ContextType(name="pipeline"))
    run_type = store.put_context_type(pb.ContextType(name="pipeline_run"))
    serving_dir = metadata_path.parent / "serving" / MODEL

    def artifact(type_name, uri, **custom):
        a = pb.Artifact(type_id=types[type_name], uri=uri, state=pb.Artifact.LIVE)
        for key, value in custom.items():
            if isinstance(value, int):
                a.custom_properties[key].int_value = value
            else:
                a.custom_properties[key].string_value = value
        return a

    def event(kind, key):
        e = pb.Event(type=kind)
        e.path.steps.add().key = key
        e.path.steps.add().index = 0
        return e

    def execute(name, contexts, inputs=(), outputs=()):
        e = pb.Execution(type_id=[v for k, v in executions.items() if k.endswith(name)][0],
                         last_known_state=pb.Execution.COMPLETE)
        pairs = [(a, event(pb.Event.INPUT, k)) for k, a in inputs] + [(a, event(pb.Event.OUTPUT, k)) for k, a in outputs]
        _, ids, _ = store.put_execution(e, pairs, contexts, reuse_context_if_already_exist=True)
        return dict(zip([k for k, _ in inputs] + [k for k, _ in outputs], ids))

    models = {}
    for i, (key, version, blessed) in enumerate(runs):
        contexts = [pb.Context(type_id=pipeline_type, name="taxi-pipeline"),
                    pb.Context(type_id=run_type, name=f"run-{i}")]
        root = metadata_path.parent / "pipeline_root"
        if key not in models:
            models[key] = execute("Trainer", contexts, outputs=[("model", artifact("Model", f"{root}/Trainer/{i}"))])["model"]
        model = store.get_artifacts_by_id([models[key]])[0]
        blessing = artifact("ModelBlessing", f"{root}/Evaluator/{i}", blessed=int(blessed), current_model_id=model.id,
                            current_model=model.uri)
        blessing_id = execute("ReusingEvaluator", contexts, [("model", model)], [("blessing", blessing)])["blessing"]
        infra = artifact("InfraBlessing", f"{root}/ServingValidator/{i}", blessed=int(version is not None),
                         has_model=int(version is not None))
        infra_id = execute("ServingValidator", contexts, [("model", model)], [("blessing", infra)])["blessing"]
        blessing, infra = store.get_artifacts_by_id([blessing_id, infra_id])
        pushed = artifact("PushedModel", f"{root}/Pusher/{i}", pushed=int(blessed and version is not None))
        if blessed and version is not None:
            pushed.custom_properties["pushed_version"].string_value = str(version)
            pushed.custom_properties["pushed_destination"].string_value = str(serving_dir / str(version))
        execute("Pusher", contexts, [("model_blessing", blessing), ("infra_blessing", infra)], [("pushed_model", pushed)])
    return models


def _latest_blessed_model(metadata_path: Path) -> int:
    """The Model id TFX's LatestBlessedModelStrategy resolves from every Model and ModelBlessing of the
    pipeline (what the resolver's channels hold), as a run's `latest_blessed_model_resolver` does."""
    from tfx.dsl.input_resolution.strategies.latest_blessed_model_strategy import LatestBlessedModelStrategy
    from tfx.types import artifact_utils

    from pipeline import run_results

    store = run_results.connect(metadata_path)
    context = store.get_context_by_type_and_name("pipeline", configs.PIPELINE_NAME)
    types = {t.id: t for t in store.get_artifact_types()}
    artifacts = [artifact_utils.deserialize_artifact(types[a.type_id], a)
                 for a in store.get_artifacts_by_context(context.id)]
    resolved = LatestBlessedModelStrategy().resolve_artifacts(store, {
        "model": [a for a in artifacts if a.type_name == "Model"],
        "model_blessing": [a for a in artifacts if a.type_name == "ModelBlessing"]})
    assert len(resolved["model"]) == 1
    return resolved["model"][0].id


def _store(home: Path):
    from pipeline import run_results

    return run_results.connect(home / "metadata.db")


def _rollbacks(metadata_path: Path):
    return _store(metadata_path.parent).get_executions_by_type(rollback_record.EXECUTION_TYPE)


# -- a served folder under load ----------------------------------------------------------------------

@contextlib.contextmanager
def _server(serving_model_dir: Path, newest: int):
    from serving.config import model_config
    from serving.model_servers.server import ModelServer, ServerOptions

    options = ServerOptions(model_config.single_model_config(MODEL, str(serving_model_dir)), grpc_port=0,
                            rest_port=None, poll_wait_s=0.1)
    with ModelServer(options) as server:
        assert server.wait_until_available(MODEL, 120, version=newest)
        yield f"127.0.0.1:{server.grpc_port}"


def _requests(target: str):
    """Three taxi rows as serving_default takes them."""
    from serving.client import ServingClient, raw_input_dtypes, rows_to_inputs

    with open(configs.default_data_root() / "data.csv") as f:
        rows = [row for _, row in zip(range(3), csv.DictReader(f))]
    with ServingClient(target) as client:
        defs = client.signature_defs(MODEL)
    return rows_to_inputs(rows, defs["serving_default"], raw_input_dtypes(defs))


def _rollback_under_load(home: Path, target: str, old: int, extra_args=()):
    """Run `taxi-pipeline rollback` in its own process while three clients send without pause; returns
    (the command's result, per client the (time, version, probabilities) of every answer, errors,
    when the command started)."""
    import grpc

    from serving.client import ServingClient

    inputs = _requests(target)
    stop = threading.Event()
    answers = [[] for _ in range(3)]
    errors = []

    def send(out):
        with ServingClient(target) as client:
            while not stop.is_set():
                try:
                    outputs, response = client.predict(MODEL, inputs)
                except grpc.RpcError as err:  # any failure fails the test
                    errors.append(f"{err.code().name}: {err.details()}")
                    continue
                out.append((time.monotonic(), response.model_spec.version.value,
                            tuple(outputs["probabilities"].ravel().round(6))))

    threads = [threading.Thread(target=send, args=(out,)) for out in answers]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "pipeline.cli", "rollback", "--home", str(home), *extra_args],
                              cwd=REPO, capture_output=True, text=True, timeout=300)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(out and out[-1][1] == old for out in answers):
            time.sleep(0.05)
        time.sleep(0.5)  # keep sending while the newer version unloads
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    return done, answers, errors, started


def _assert_switched(answers, errors, started, new: int, old: int):
    assert errors == []
    for out in answers:
        versions = [v for _, v, _ in out]
        assert versions[0] == new and versions[-1] == old, f"no switch: first {versions[:1]}, last {versions[-1:]}"
        switch = versions.index(old)
        assert set(versions[:switch]) == {new} and set(versions[switch:]) == {old}, "answers went back"
        # The newer version answered after the rollback began: traffic flowed while it ran.
        assert any(t > started and v == new for t, v, _ in out)
        # Each version's answers are its own model's (one answer per version, and the two differ).
        by_version = {v: {p for _, w, p in out if w == v} for v in (new, old)}
        assert all(len(p) == 1 for p in by_version.values()) and by_version[new] != by_version[old]
    assert sum(len(out) for out in answers) > 30


def _versions(folder: Path):
    return sorted(int(p.name) for p in folder.iterdir()) if folder.exists() else []


# -- fast: sample models -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sample_models(tmp_path_factory):
    """Two taxi-like SavedModels answering differently (their output biases differ)."""
    from serving.testing.sample_models import export_taxi_like_model

    root = tmp_path_factory.mktemp("rollback-models")
    return [Path(export_taxi_like_model(str(root / name), seed=0, bias=bias)) for name, bias in (("a", 0.0), ("b", 2.0))]


def _home(tmp_path: Path, models, versions):
    """A home whose serving folder holds `versions` (version -> model index into `models`)."""
    home = tmp_path / "home"
    for version, index in versions.items():
        shutil.copytree(models[index], home / "serving" / MODEL / str(version))
    return home


def test_rollback_under_load_serves_the_previous_version_with_no_failed_request(sample_models, tmp_path):
    from pipeline import status

    home = _home(tmp_path, sample_models, {1: 0, 2: 1})
    models = _record_runs(home / "metadata.db", [("m1", 1, True), ("m2", 2, True)])
    assert _latest_blessed_model(home / "metadata.db") == models["m2"]
    with _server(home / "serving" / MODEL, newest=2) as target:
        done, answers, errors, started = _rollback_under_load(home, target, old=1, extra_args=["--reason", "bad AUC"])
    assert done.returncode == 0, done.stderr
    _assert_switched(answers, errors, started, new=2, old=1)
    assert done.stdout.splitlines()[0] == (f"rolled back {MODEL}: version 1 is served again (was 2); "
                                           f"2 moved to {home / 'serving_retired' / MODEL / '2'}")
    assert f"withdrew the blessing of model {models['m2']}; the next run's baseline is model {models['m1']}" in done.stdout

    # Kept, not deleted; the folder a server polls holds the old version only.
    assert _versions(home / "serving" / MODEL) == [1]
    assert (home / "serving_retired" / MODEL / "2" / "saved_model.pb").is_file()
    # TFX's own strategy now resolves the served model: the next run's baseline.
    assert _latest_blessed_model(home / "metadata.db") == models["m1"]
    (execution,) = _rollbacks(home / "metadata.db")
    p = execution.properties
    assert (p["from_version"].int_value, p["to_version"].int_value, p["reason"].string_value) == (2, 1, "bad AUC")
    assert abs(p["time"].int_value - time.time()) < 120
    store = _store(home)
    linked = {(e.path.steps[0].key, e.artifact_id) for e in store.get_events_by_execution_ids([execution.id])}
    assert {("rolled_back_model", models["m2"]), ("served_model", models["m1"])} <= linked
    (withdrawn,) = [b for b in store.get_artifacts_by_type("ModelBlessing")
                    if b.custom_properties["current_model_id"].int_value == models["m2"]]
    assert ("blessing", withdrawn.id) in linked
    assert withdrawn.custom_properties["blessed"].int_value == 0
    assert withdrawn.custom_properties[rollback_record.ROLLED_BACK_TO].int_value == 1
    # status says what was rolled back and when.
    text = status.render(configs.PipelineConfig(home=home), 1)
    assert text.splitlines()[-1].startswith("rolled back ")
    assert text.splitlines()[-1].endswith(": version 2 -> 1 (retired 2; reason: bad AUC)")


def test_rollback_to_an_older_version_retires_every_newer_one_and_withdraws_newer_blessings(sample_models, tmp_path):
    home = _home(tmp_path, sample_models, {1: 0, 2: 1, 3: 0})
    # Run 4's model was blessed but failed the serving check: not pushed, yet the newest blessed model.
    models = _record_runs(home / "metadata.db",
                          [("m1", 1, True), ("m2", 2, True), ("m3", 3, True), ("m4", None, True)])
    assert _latest_blessed_model(home / "metadata.db") == models["m4"]
    assert cli.main(["rollback", "--home", str(home), "--to", "1"]) == 0
    assert _versions(home / "serving" / MODEL) == [1]
    assert _versions(home / "serving_retired" / MODEL) == [2, 3]
    assert _latest_blessed_model(home / "metadata.db") == models["m1"]
    (execution,) = _rollbacks(home / "metadata.db")
    assert execution.properties["retired_versions"].string_value == "2,3"


def test_a_model_served_again_after_an_earlier_rollback_gets_its_blessing_back(sample_models, tmp_path):
    # Version 3 is model m1 again (a later run took the Trainer from the cache and pushed it anew).
    home = _home(tmp_path, sample_models, {1: 0, 2: 1, 3: 0})
    models = _record_runs(home / "metadata.db", [("m1", 1, True), ("m2", 2, True), ("m1", 3, True)])
    assert cli.main(["rollback", "--home", str(home)]) == 0  # 3 -> 2: m1's blessings are withdrawn
    assert _latest_blessed_model(home / "metadata.db") == models["m2"]
    assert cli.main(["rollback", "--home", str(home)]) == 0  # 2 -> 1: m1 serves again
    assert _versions(home / "serving" / MODEL) == [1]
    assert _latest_blessed_model(home / "metadata.db") == models["m1"]


def test_a_home_without_ml_metadata_still_rolls_back_and_says_nothing_was_recorded(sample_models, tmp_path, capsys):
    home = _home(tmp_path, sample_models, {1: 0, 2: 1})
    assert cli.main(["rollback", "--home", str(home)]) == 0
    assert _versions(home / "serving" / MODEL) == [1]
    assert "no ML Metadata store" in capsys.readouterr().out
    assert not (home / "metadata.db").exists()


@pytest.mark.parametrize("versions, args, message", [
    (None, [], "no serving folder"),
    ({}, [], "nothing is pushed under"),
    ({5: 0}, [], "only version 5 is under"),
    ({5: 0, 6: 1}, ["--to", "4"], "version 4 is not under"),
    ({5: 0, 6: 1}, ["--to", "6"], "version 6 is the one served now"),
    ({5: 0, 6: 1}, ["--to", "7"], "version 7 is newer than the served version 6"),
])
def test_nothing_to_roll_back_is_exit_2_with_one_line(sample_models, tmp_path, capsys, versions, args, message):
    home = tmp_path / "home"
    if versions is not None:
        (home / "serving" / MODEL).mkdir(parents=True)
        _home(tmp_path, sample_models, versions)
    assert cli.main(["rollback", "--home", str(home), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    if versions:
        assert _versions(home / "serving" / MODEL) == sorted(versions)
    if versions is None:
        assert not home.exists()  # the lock is taken only once there is a serving folder: no home is created


def test_a_run_holding_the_home_makes_rollback_exit_2_naming_it(sample_models, tmp_path, capsys):
    from pipeline import home_lock

    home = _home(tmp_path, sample_models, {1: 0, 2: 1})
    with home_lock.hold(home):
        assert cli.main(["rollback", "--home", str(home)]) == 2
    err = capsys.readouterr().err
    assert f"{home} is in use by run pid {os.getpid()}" in err
    assert _versions(home / "serving" / MODEL) == [1, 2]


# -- slow: two real pipeline runs, then the next run -----------------------------------------------------

def test_rollback_of_a_real_push_under_load_and_the_next_run_compares_against_the_served_model(
        taxi_pipeline_result, tmp_path):
    from pipeline import run_results
    from pipeline.local_runner import run_pipeline

    config, first = taxi_pipeline_result
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy2(config.metadata_path, home / "metadata.db")  # the shared home stays as the other tests expect it
    shutil.copytree(config.serving_base, home / "serving")
    # A second model: more passes (the Trainer alone re-runs), no regression bar (blessed for sure).
    second_config = config.replace(home=home, epochs=config.epochs + 1, auc_regression_tolerance=1.0)
    second = run_pipeline(second_config)
    old, new = int(first.push.version), int(second.push.version)
    assert new > old and _versions(second_config.serving_model_dir) == [old, new]
    old_model = first.nodes["Trainer"].output("model").id
    assert _latest_blessed_model(home / "metadata.db") == second.nodes["Trainer"].output("model").id

    with _server(second_config.serving_model_dir, newest=new) as target:
        done, answers, errors, started = _rollback_under_load(home, target, old=old)
    assert done.returncode == 0, done.stderr
    _assert_switched(answers, errors, started, new=new, old=old)
    assert _versions(second_config.serving_model_dir) == [old]
    assert _latest_blessed_model(home / "metadata.db") == old_model

    # The next run: its resolver and its Evaluator take the served model as the baseline, and the
    # rolled-back model (from the cache, its blessing withdrawn) is not pushed again.
    run_pipeline(second_config)
    store = run_results.connect(home / "metadata.db")
    evaluator = max(store.get_executions_by_type("components.reusing_evaluator.ReusingEvaluator"), key=lambda e: e.id)
    baseline = [e.artifact_id for e in store.get_events_by_execution_ids([evaluator.id])
                if e.path.steps[0].key == "baseline_model"]
    assert baseline == [old_model]
    # The newest run's latest_blessed_model_resolver (its other resolvers record other keys).
    resolvers = store.get_executions_by_type("tfx.dsl.components.common.resolver.Resolver")
    events = [e for e in store.get_events_by_execution_ids([r.id for r in resolvers]) if e.path.steps[0].key == "model"]
    newest = max(e.execution_id for e in events)
    resolved = {e.artifact_id for e in events if e.execution_id == newest}
    assert resolved == {old_model}
    assert _versions(second_config.serving_model_dir) == [old]
