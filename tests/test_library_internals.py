"""What the project relies on in TFX, TF-Transform, TFMA and TFDV beyond their public APIs still holds.

One module per library holds those uses:
- TFX: `kubeflow/tfx_internals.py` (the lazy `tfx.components`, the Beam sdist, the Evaluator's blessing,
  the output folder layout, ExampleGen's fingerprint, the Trainer's FnArgs, the local orchestrator's launch of a
  node); TFX's file and folder names the components read are in `trainer_module/records.py`. The lazy
  `tfx.components` is checked against TFX by tests/test_layers.py (building the pipeline loads no other
  component; the package's names work);
- TF-Transform: `components/analysis_reuse.py` (the analyzer cache's folder per dataset);
  `trainer_module/transform_probe.py` reads TFT's constants through its public layer alone, relying on
  what its outputs mean, which is checked here too;
- TFMA: `pipeline/report_data.py` (the file TFMA writes its EvalConfig to, TFMA's metric names);
- TFDV: `pipeline/skew.py` (statistics of an in-memory batch).

Each test runs or reads the library's own code and fails with a message naming the wrapper to revisit.
The library versions are pinned (constraints.txt): a failure here after an upgrade is the list of what to
look at.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import components  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from kubeflow import tfx_internals
from tfx.dsl.components.base import base_beam_executor
from trainer_module import records

REPO = Path(__file__).resolve().parents[1]


def _custom_properties(artifact) -> dict:
    found = {}
    for name, value in artifact.mlmd_artifact.custom_properties.items():
        found[name] = getattr(value, value.WhichOneof("value"))
    return found


# ---- TFX -----------------------------------------------------------------------------------------------

class _StubTFMA:
    """TFMA as TFX's Evaluator executor sees it, with the model loading and evaluation replaced: the executor
    then runs everything of its own (config checks, reading the split, writing the blessing) in seconds."""

    def __init__(self, validation_ok: bool):
        import apache_beam as beam
        import tensorflow_model_analysis as tfma
        from tensorflow_model_analysis.proto import validation_result_pb2

        self._real = tfma
        self.default_eval_shared_model = lambda **kwargs: kwargs["model_name"]
        self.is_batched_input = lambda *args, **kwargs: False
        self.ExtractEvaluateAndWriteResults = lambda **kwargs: beam.Map(lambda example: example)
        self.load_validation_result = lambda path: validation_result_pb2.ValidationResult(validation_ok=validation_ok)

    def __getattr__(self, name):
        return getattr(self._real, name)


def _evaluator_io(tmp_path: Path, name: str, with_baseline: bool):
    from tfx.types import standard_artifacts, standard_component_specs as specs

    examples = standard_artifacts.Examples()
    examples.uri = str(tmp_path / name / "examples")
    examples.split_names = json.dumps([records.EVAL_SPLIT])
    os.makedirs(records.split_dir(examples.uri, records.EVAL_SPLIT))
    Path(records.split_dir(examples.uri, records.EVAL_SPLIT), "data").write_bytes(b"")  # no examples
    model, baseline = standard_artifacts.Model(), standard_artifacts.Model()
    model.uri, model.id = str(tmp_path / "model"), 11
    baseline.uri, baseline.id = str(tmp_path / "baseline"), 7
    evaluation, blessing = standard_artifacts.ModelEvaluation(), standard_artifacts.ModelBlessing()
    evaluation.uri, blessing.uri = str(tmp_path / name / "evaluation"), str(tmp_path / name / "blessing")
    for uri in (evaluation.uri, blessing.uri):
        os.makedirs(uri)
    inputs = {specs.EXAMPLES_KEY: [examples], specs.MODEL_KEY: [model]}
    if with_baseline:
        inputs[specs.BASELINE_MODEL_KEY] = [baseline]
    return inputs, {specs.EVALUATION_KEY: [evaluation], specs.BLESSING_KEY: [blessing]}


@pytest.mark.parametrize("validation_ok,with_baseline", [(True, True), (False, True), (True, False)])
def test_write_blessing_writes_what_tfxs_evaluator_writes(tmp_path, monkeypatch, validation_ok, with_baseline):
    """components/reusing_evaluator.py blesses a reused evaluation through tfx_internals.write_blessing,
    which must leave the blessing TFX's Evaluator executor leaves: the same files, the same properties."""
    from tfx.components.evaluator import executor as tfx_evaluator
    from tfx.types import standard_component_specs as specs
    from tfx.utils import proto_utils

    from pipeline import configs
    from pipeline.pipeline import eval_config

    config = eval_config(configs.PipelineConfig())
    if not with_baseline:
        del config.model_specs[1:]  # the candidate alone
    exec_properties = {specs.EVAL_CONFIG_KEY: proto_utils.proto_to_json(config),
                       specs.EXAMPLE_SPLITS_KEY: json.dumps([records.EVAL_SPLIT]),
                       "current_component_id": "Evaluator"}
    monkeypatch.setattr(tfx_evaluator, "tfma", _StubTFMA(validation_ok))
    inputs, outputs = _evaluator_io(tmp_path, "tfx", with_baseline)
    tfx_evaluator.Executor().Do(inputs, outputs, dict(exec_properties))
    theirs = outputs[specs.BLESSING_KEY][0]

    inputs, outputs = _evaluator_io(tmp_path, "ours", with_baseline)
    ours = outputs[specs.BLESSING_KEY][0]
    tfx_internals.write_blessing(ours, inputs[specs.MODEL_KEY][0], (inputs.get(specs.BASELINE_MODEL_KEY) or [None])[0],
                                 exec_properties, validation_ok)

    assert sorted(os.listdir(ours.uri)) == sorted(os.listdir(theirs.uri)), \
        "TFX's Evaluator writes other blessing files than kubeflow/tfx_internals.write_blessing"
    assert _custom_properties(ours) == _custom_properties(theirs), \
        "TFX's Evaluator sets other blessing properties than kubeflow/tfx_internals.write_blessing"
    assert _custom_properties(theirs)["blessed"] == int(validation_ok)


@pytest.mark.parametrize("blessed", [True, False])
def test_write_infra_blessing_writes_what_infravalidator_writes_and_the_pusher_reads(tmp_path, blessed):
    """components/serving_validator.py blesses through tfx_internals.write_infra_blessing in place of TFX's
    InfraValidator, and TFX's Pusher pushes the model it leaves in stamped_model_dir."""
    from tfx.components.infra_validator import executor as infra_validator
    from tfx.components.pusher import executor as pusher_executor
    from tfx.components.util import model_utils
    from tfx.types import standard_artifacts, standard_component_specs as specs

    from serving.servables import warmup

    theirs, ours = standard_artifacts.InfraBlessing(), standard_artifacts.InfraBlessing()
    theirs.uri, ours.uri = str(tmp_path / "theirs"), str(tmp_path / "ours")
    for uri in (theirs.uri, ours.uri):
        os.makedirs(uri)
    if blessed:
        infra_validator._mark_blessed(theirs)
        theirs.set_int_custom_property(infra_validator._MODEL_FLAG_KEY, 1)  # as _CreateWarmupModel does
    else:
        infra_validator._mark_not_blessed(theirs)
    tfx_internals.write_infra_blessing(ours, blessed, has_model=blessed, note="why")

    assert sorted(os.listdir(ours.uri)) == sorted(os.listdir(theirs.uri)), \
        "TFX's InfraValidator writes other blessing files than kubeflow/tfx_internals.write_infra_blessing"
    for name in _custom_properties(theirs):
        assert ours.get_int_custom_property(name) == theirs.get_int_custom_property(name), name
    assert model_utils.is_infra_validated(ours) == blessed
    if blessed:
        pushed = pusher_executor.Executor().GetModelPath({specs.INFRA_BLESSING_KEY: [ours]})
        assert pushed == tfx_internals.stamped_model_dir(ours.uri), "TFX's Pusher pushes another folder"
    # The warmup file the ServingValidator writes is the one TF Serving, and serving/, replay.
    assert tfx_internals.warmup_file("/m") == warmup.requests_path("/m")


def test_the_property_names_are_tfxs():
    """The run view, history and rollback read these off TFX's artifacts in ML Metadata without importing TFX."""
    from tfx.components.evaluator import constants as evaluator
    from tfx.components.infra_validator import executor as infra_validator
    from tfx.components.pusher import executor as pusher_executor

    assert tfx_internals.BLESSED_KEY == evaluator.ARTIFACT_PROPERTY_BLESSED_KEY == infra_validator._BLESSED_KEY
    assert tfx_internals.CURRENT_MODEL_ID_KEY == evaluator.ARTIFACT_PROPERTY_CURRENT_MODEL_ID_KEY
    assert tfx_internals.HAS_MODEL_KEY == infra_validator._MODEL_FLAG_KEY
    assert (tfx_internals.PUSHED_KEY, tfx_internals.PUSHED_VERSION_KEY, tfx_internals.PUSHED_DESTINATION_KEY) == (
        pusher_executor._PUSHED_KEY, pusher_executor._PUSHED_VERSION_KEY, pusher_executor._PUSHED_DESTINATION_KEY)


def test_tfxs_pusher_puts_a_version_where_the_atomic_pusher_renames_it_from(tmp_path):
    """components/atomic_pusher.py lets TFX's Pusher push into a staging folder, reads the version it
    recorded (pushed_version), renames `pushed_folder(staging, version)` into place and records it again
    with mark_pushed."""
    from tfx.components.pusher import executor as pusher_executor
    from tfx.proto import pusher_pb2
    from tfx.types import standard_artifacts, standard_component_specs as specs
    from tfx.utils import proto_utils

    model, blessing, pushed = standard_artifacts.Model(), standard_artifacts.ModelBlessing(), standard_artifacts.PushedModel()
    model.uri, blessing.uri, pushed.uri = str(tmp_path / "model"), str(tmp_path / "blessing"), str(tmp_path / "pushed")
    serving = tmp_path / "model" / "Format-Serving"
    (serving / "variables").mkdir(parents=True)
    (serving / "saved_model.pb").write_bytes(b"graph")
    blessing.set_int_custom_property(tfx_internals.BLESSED_KEY, 1)
    destination = pusher_pb2.PushDestination(filesystem=pusher_pb2.PushDestination.Filesystem(
        base_directory=str(tmp_path / "staging")))
    executor = pusher_executor.Executor()
    executor.Do({specs.MODEL_KEY: [model], specs.MODEL_BLESSING_KEY: [blessing]}, {specs.PUSHED_MODEL_KEY: [pushed]},
                {specs.PUSH_DESTINATION_KEY: proto_utils.proto_to_json(destination)})

    version = tfx_internals.pushed_version(pushed)
    assert version is not None and version.isdigit(), _custom_properties(pushed)
    folder = tfx_internals.pushed_folder(str(tmp_path / "staging"), version)
    assert pushed.get_string_custom_property(tfx_internals.PUSHED_DESTINATION_KEY) == folder
    assert (Path(folder) / "saved_model.pb").read_bytes() == b"graph", "TFX's Pusher put the version elsewhere"
    tfx_internals.mark_pushed(executor, pushed, "/serving/7", "7")
    assert (tfx_internals.pushed_version(pushed),
            pushed.get_string_custom_property(tfx_internals.PUSHED_DESTINATION_KEY)) == ("7", "/serving/7")


def test_output_place_reads_the_local_orchestrators_output_folders(tmp_path):
    """ReusingEvaluator finds its earlier evaluations, and a stopped DriftCheck keeps its report, by where TFX's
    local orchestrator puts an execution's outputs: `<node dir>/<output key>/<execution id>`."""
    from tfx.orchestration.portable import outputs_utils
    from tfx.proto.orchestration import pipeline_pb2

    spec = pipeline_pb2.OutputSpec()
    spec.artifact_spec.type.name = "ModelEvaluation"
    node_dir = str(tmp_path / "pipeline_root" / "Evaluator")
    uris = {execution: outputs_utils.generate_output_artifacts(execution, {"evaluation": spec}, node_dir)["evaluation"][0].uri
            for execution in (3, 12, 40)}
    assert tfx_internals.output_place(uris[12]) == (node_dir, "evaluation", "12"), uris[12]
    for uri in uris.values():
        os.makedirs(uri)
    os.makedirs(os.path.join(node_dir, "evaluation", ".system"))  # not an execution's folder
    assert tfx_internals.earlier_outputs(uris[40]) == [(3, uris[3]), (12, uris[12])]


class _BeamExecutor(base_beam_executor.BaseBeamExecutor):  # a module-level class: TFX logs its full name
    def Do(self, input_dict, output_dict, exec_properties):
        pass


def test_skipping_the_sdist_is_what_tfxs_beam_executors_call():
    """TFX's BaseBeamExecutor turns its pipeline options into the workers' dependencies through
    `dependency_utils.make_beam_dependency_flags`, looked up when an executor is made: the function
    tfx_internals.skip_tfx_sdist replaces."""
    from tfx.utils import dependency_utils

    args = ["--direct_num_workers=1"]
    undo = tfx_internals.skip_tfx_sdist()
    try:
        executor = _BeamExecutor(_BeamExecutor.Context(beam_pipeline_args=args))
        assert not [a for a in executor._beam_pipeline_args if a.startswith("--extra_package")], \
            executor._beam_pipeline_args
    finally:
        undo()
    called = []
    original = dependency_utils.make_beam_dependency_flags
    dependency_utils.make_beam_dependency_flags = lambda given: called.append(list(given)) or list(given)
    try:
        _BeamExecutor(_BeamExecutor.Context(beam_pipeline_args=args))
    finally:
        dependency_utils.make_beam_dependency_flags = original
    assert called == [args], "TFX's Beam executors no longer call dependency_utils.make_beam_dependency_flags"


def test_the_tfx_component_modules_the_project_imports_exist():
    """The pipeline imports each TFX component from its own module, not from `tfx.components`, whose
    `__init__` defer_tfx_components holds back: every such module must still be there."""
    import importlib.util
    import re

    named = set()
    for package in ("pipeline", "components", "kubeflow", "trainer_module"):
        for path in (REPO / package).rglob("*.py"):
            named.update(re.findall(r"^\s*from (tfx\.components\.[\w.]+) import", path.read_text(), re.M))
    assert len(named) > 10, named
    missing = sorted(m for m in named if importlib.util.find_spec(m) is None)
    assert not missing, f"TFX no longer has {missing}"


def test_splits_fingerprint_changes_with_the_files_alone(tmp_path):
    """kubeflow/input_fingerprint.py gives KFP's cache key TFX's fingerprint of ExampleGen's input files."""
    from tfx.proto import example_gen_pb2

    config = example_gen_pb2.Input(splits=[example_gen_pb2.Input.Split(name="single_split", pattern="*")])
    data = tmp_path / "data.csv"
    data.write_text("a,b\n1,2\n")
    first = tfx_internals.splits_fingerprint(str(tmp_path), config)
    assert tfx_internals.splits_fingerprint(str(tmp_path), config) == first
    data.write_text("a,b\n1,2\n3,4\n")
    os.utime(data, (1_700_000_000, 1_700_000_000))
    assert tfx_internals.splits_fingerprint(str(tmp_path), config) != first, \
        "TFX's ExampleGen fingerprint no longer sees a changed file"


def test_trainer_fn_args_are_the_ones_tfxs_trainer_hands_run_fn(tmp_path, monkeypatch):
    """A trainer worker rebuilds FnArgs through tfx_internals.trainer_fn_args; they must be what TFX's
    GenericExecutor.Do passes to run_fn in the Trainer's own process."""
    from tfx.components.trainer import executor as trainer_executor
    from tfx.types import standard_artifacts, standard_component_specs as specs

    examples = standard_artifacts.Examples()
    examples.uri = str(tmp_path / "examples")
    examples.split_names = json.dumps([records.TRAIN_SPLIT, records.EVAL_SPLIT])
    model, model_run = standard_artifacts.Model(), standard_artifacts.ModelRun()
    model.uri, model_run.uri = str(tmp_path / "model"), str(tmp_path / "model_run")
    inputs = {specs.EXAMPLES_KEY: [examples]}
    outputs = {specs.MODEL_KEY: [model], specs.MODEL_RUN_KEY: [model_run]}
    exec_properties = {specs.TRAIN_ARGS_KEY: json.dumps({"num_steps": 10, "splits": [records.TRAIN_SPLIT]}),
                       specs.EVAL_ARGS_KEY: json.dumps({"num_steps": 5}),
                       specs.CUSTOM_CONFIG_KEY: json.dumps({"epochs": 2}),
                       specs.RUN_FN_KEY: "not.used"}
    handed = []

    def run_fn(fn_args):
        handed.append(fn_args)
        os.makedirs(fn_args.serving_model_dir)

    monkeypatch.setattr(trainer_executor.udf_utils, "get_fn", lambda properties, name: run_fn)
    trainer_executor.GenericExecutor().Do(inputs, outputs, dict(exec_properties))
    ours = tfx_internals.trainer_fn_args(inputs, outputs, dict(exec_properties))

    def fields(fn_args):
        return {k: v for k, v in vars(fn_args).items() if k != "data_accessor"}  # functions made per call

    assert fields(ours) == fields(handed[0]), "TFX's Trainer hands run_fn other FnArgs than tfx_internals.trainer_fn_args"
    assert ours.train_files == [os.path.join(records.split_dir(examples.uri, records.TRAIN_SPLIT), "*")]
    assert (ours.train_steps, ours.eval_steps, ours.custom_config) == (10, 5, {"epochs": 2})


def test_tfx_file_and_folder_names_in_records_are_tfxs():
    """trainer_module/records.py names TFX's split folders, statistics and schema files for the readers."""
    from tfx.components.schema_gen import executor as schema_gen_executor
    from tfx.components.statistics_gen import executor as statistics_gen_executor
    from tfx.types import artifact_utils, standard_artifacts

    statistics = standard_artifacts.ExampleStatistics()
    statistics.uri = "/root/StatisticsGen/statistics/4"
    statistics.split_names = json.dumps([records.TRAIN_SPLIT, records.EVAL_SPLIT])
    assert records.split_dir(statistics.uri, records.EVAL_SPLIT) == artifact_utils.get_split_uri([statistics], records.EVAL_SPLIT)
    assert records.split_of(artifact_utils.get_split_uri([statistics], records.TRAIN_SPLIT)) == records.TRAIN_SPLIT
    assert records.STATISTICS_FILE == statistics_gen_executor.DEFAULT_FILE_NAME
    assert records.SCHEMA_FILE == schema_gen_executor.DEFAULT_FILE_NAME


# ---- TF-Transform --------------------------------------------------------------------------------------

def test_the_analyzer_cache_keeps_one_folder_per_split_named_after_its_path():
    """components/analysis_reuse.py counts reused datasets by the analyzer cache's folder names: TFX's
    Transform names a dataset after its split's file pattern, and TFT keeps its cache in a folder of
    that name, the same in every run over the same split."""
    from tensorflow_transform.beam import analyzer_cache
    from tfx.components.transform import executor as transform_executor

    from components import analysis_reuse

    pattern = os.path.join("/home/pipeline_root/CsvExampleGen/examples/14", f"{records.SPLIT_PREFIX}train", "*")
    keys = [transform_executor._Dataset(pattern, "tfrecords_gzip", 0, None).dataset_key for _ in range(2)]
    assert keys[0] == keys[1], "TFX's Transform names one split's dataset differently in two runs"
    folder = os.path.basename(analyzer_cache._get_dataset_cache_path("/cache", keys[0]))
    assert analysis_reuse._names([folder]) == "examples-14-Split-train", folder


@pytest.fixture(scope="module")
def transform_output(tmp_path_factory):
    """The project's preprocessing_fn analysed by TF-Transform on a few rows (a Transform graph in a folder)."""
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2
    from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

    from trainer_module.features import SCHEMA_PATH
    from trainer_module.preprocessing import FORCE_TF_COMPAT_V1, preprocessing_fn

    schema = text_format.Parse(SCHEMA_PATH.read_text(), schema_pb2.Schema())
    spec = schema_utils.schema_as_feature_spec(schema).feature_spec
    rows = []
    for i in range(40):
        row = {}
        for name, feature in spec.items():
            value = {"string": [b"Cash", b"Credit Card", b"Flash Cab"][i % 3], "int64": (i * 7) % 24,
                     "float32": float((i * 13) % 37) + 0.25}[feature.dtype.name]
            row[name] = [value] if hasattr(feature, "shape") or i % 5 else []  # some optional values missing
        rows.append(row)
    metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(spec))
    out = tmp_path_factory.mktemp("transform")
    with tft_beam.Context(temp_dir=str(out / "tmp"), force_tf_compat_v1=FORCE_TF_COMPAT_V1):
        transform_fn = (rows, metadata) | tft_beam.AnalyzeDataset(preprocessing_fn)
        _ = transform_fn | tft_beam.WriteTransformFn(str(out / "graph"))
    return tft.TFTransformOutput(str(out / "graph")), spec, rows


def test_transform_probe_reads_constants_that_reproduce_tfts_own_layer(transform_output):
    """DensePreprocessing reads TFT's means, deviations and bucket boundaries off its layer
    (trainer_module/transform_probe.py): z-scores affine in the value, bucket indices counting the
    boundaries at or below it. Its outputs must then be TFT's on any values, inside and outside the data."""
    import numpy as np
    import tensorflow as tf

    from trainer_module import features
    from trainer_module.dense_preprocessing import DensePreprocessing

    tf_transform_output, spec, rows = transform_output
    raw_spec = {name: spec[name] for name in DensePreprocessing.inputs()}
    dense = DensePreprocessing.from_transform(tf_transform_output, raw_spec)
    name = features.LOG_NUMERIC_FEATURES[0]
    values = np.log1p([r[name][0] for r in rows if r[name]]).astype(np.float64)
    mean, deviation = dense.scores[name]  # TFT's mean and population deviation of the present log1p values
    assert (mean, deviation) == (pytest.approx(values.mean(), rel=1e-4), pytest.approx(values.std(), rel=1e-4))
    grid = np.concatenate([np.linspace(-5, 60, 131), [0.0, 0.25, 1e6]])
    columns = {}
    for feature, feature_spec in raw_spec.items():
        if feature_spec.dtype == tf.string:
            columns[feature] = np.array(([b"Cash", b"Credit Card", b"Unseen", b""] * 40)[:len(grid)], dtype=object)
        elif feature_spec.dtype.is_integer:
            columns[feature] = (np.arange(len(grid)) % 30 - 3).astype(feature_spec.dtype.as_numpy_dtype)
        else:
            columns[feature] = grid.astype(feature_spec.dtype.as_numpy_dtype)
    worst = dense.check(tf_transform_output, columns)  # raises PreprocessingMismatch, naming the output
    assert worst, "no output compared"


@pytest.mark.parametrize("in_graph_max_bytes", [tfx_internals.CACHE_ENTRY_IN_GRAPH_MAX_BYTES, 0])
def test_analyzer_cache_source_reads_what_tft_wrote(tmp_path, monkeypatch, in_graph_max_bytes):
    """tfx_internals.analyzer_cache_read_while_built: TFX's Transform hands its processor's `_GetCacheSource()`
    to TF-Transform's ReadAnalysisCacheFromFS, which builds it with each entry's file pattern; a cache TF-Transform
    wrote reads back through it as through TFX's default (Beam's ReadFromTFRecord), whether read while the
    pipeline is built (small entries) or left to ReadFromTFRecord (over the size limit, here 0)."""
    import inspect

    import apache_beam as beam
    from apache_beam.testing import util as beam_test_util
    from tensorflow_transform.beam import analyzer_cache
    from tfx.components.transform import executor as transform_executor

    processor = transform_executor.TransformProcessor
    assert "self._GetCacheSource()" in inspect.getsource(processor._RunBeamImpl), \
        "TFX's Transform no longer reads the analyzer cache through TransformProcessor._GetCacheSource"
    assert "TransformProcessor()" in inspect.getsource(transform_executor.Executor.Do)
    assert processor._GetCacheSource() is None  # TFX's default: TF-Transform's, ReadFromTFRecord
    with tfx_internals.analyzer_cache_read_while_built():
        source = processor._GetCacheSource()
    assert source is not None and processor._GetCacheSource() is None
    monkeypatch.setattr(tfx_internals, "CACHE_ENTRY_IN_GRAPH_MAX_BYTES", in_graph_max_bytes)
    keys = (analyzer_cache.DatasetKey("span_1_train"), analyzer_cache.DatasetKey("span_1_eval"))
    entries = {keys[0]: {b"\x8a": [b"[1, 2, 3]", b"[4]"], b"\x8b": [b""]}, keys[1]: {b"\x8c": [bytes(range(256))] * 3}}
    with beam.Pipeline() as p:
        _ = {key: analyzer_cache.DatasetCache(
                {entry: p | f"Create{key.key}{i}" >> beam.Create(values)
                 for i, (entry, values) in enumerate(e.items())},
                p | f"Metadata{key.key}" >> beam.Create([analyzer_cache.DatasetCacheMetadata(7)]))
             for key, e in entries.items()} | analyzer_cache.WriteAnalysisCacheToFS(p, str(tmp_path), keys)
    with beam.Pipeline() as p:
        read = p | analyzer_cache.ReadAnalysisCacheFromFS(str(tmp_path), keys, source=source)
        for key, e in entries.items():
            for i, (entry, values) in enumerate(e.items()):
                beam_test_util.assert_that(read[key].cache_dict[entry], beam_test_util.equal_to(values),
                                           label=f"Assert{key.key}{i}")


# ---- TFMA ----------------------------------------------------------------------------------------------

def test_report_data_reads_the_eval_config_file_tfma_writes():
    from tensorflow_model_analysis.writers import eval_config_writer

    from pipeline import report_data

    written = f"{eval_config_writer.EVAL_CONFIG_FILE}.{eval_config_writer.EVAL_CONFIG_FILE_FORMAT}"
    assert report_data.EVAL_CONFIG_FILE == written, "TFMA writes its EvalConfig to another file than report_data reads"


def test_report_data_names_each_thresholded_metric_as_tfma_does():
    """The report matches the bars in eval_config.json to TFMA's measured values by metric name, which
    report_data derives from each MetricConfig as TFMA does (its configured name, else the class name)."""
    import tensorflow_model_analysis as tfma
    from google.protobuf import json_format

    from pipeline import configs, report_data
    from pipeline.pipeline import eval_config

    config = eval_config(configs.PipelineConfig())
    config.metrics_specs[0].metrics.append(tfma.MetricConfig(
        class_name="BinaryAccuracy", config=json.dumps({"name": "accuracy_at_half"}),
        threshold=tfma.MetricThreshold(value_threshold=tfma.GenericValueThreshold(lower_bound={"value": 0.1}))))
    tfmas = {key.name for key in tfma.metrics.metric_thresholds_from_metrics_specs(config.metrics_specs, config)}
    ours = {report_data._metric_name(json_format.MessageToDict(metric))
            for spec in config.metrics_specs for metric in spec.metrics
            if metric.HasField("threshold") or metric.per_slice_thresholds}
    assert ours == tfmas, "TFMA names the thresholded metrics otherwise than report_data._metric_name"
    assert "accuracy_at_half" in ours


@pytest.mark.parametrize("has_baseline", [True, False])
def test_the_baseline_model_is_measured_only_for_its_threshold(has_baseline):
    """The pipeline's eval config, as TFX's Evaluator has TFMA complete it (with or without a baseline model):
    the baseline gets ExampleCount and AUC (the change threshold's other side), the candidate every metric; with
    no baseline TFMA renames the candidate-only spec's model to the one model's "", so nothing is lost (what it
    saves: `python -m bench evaluator_processes`, variants `baseline_every_metric` and `baseline`)."""
    import tensorflow_model_analysis as tfma
    from tensorflow_model_analysis.metrics import metric_specs

    from pipeline import configs
    from pipeline.pipeline import eval_config

    config = tfma.utils.update_eval_config_with_defaults(eval_config(configs.PipelineConfig()),
                                                         has_baseline=has_baseline, rubber_stamp=True)
    tfma.utils.verify_eval_config(config)
    measured = {}
    for computation in metric_specs.to_computations(config.metrics_specs, eval_config=config):
        for key in computation.keys:
            if not key.name.startswith("_"):
                measured.setdefault(key.model_name, set()).add(key.name)
    every = {"example_count", "auc", "binary_accuracy", "precision", "recall", "calibration", "calibration_plot"}
    thresholds = {(k.name, k.model_name, k.is_diff)
                  for k in tfma.metrics.metric_thresholds_from_metrics_specs(config.metrics_specs, config)}
    if has_baseline:
        assert measured == {tfma.CANDIDATE_KEY: every, tfma.BASELINE_KEY: {"example_count", "auc"}}
        assert ("auc", tfma.CANDIDATE_KEY, True) in thresholds  # the change threshold is still applied
    else:
        assert measured == {"": every}
        assert thresholds == {("auc", "", False), ("binary_accuracy", "", False)}


# ---- TFDV ----------------------------------------------------------------------------------------------

def test_skew_statistics_of_an_in_memory_batch():
    """pipeline/skew.py computes the served requests' statistics with TFDV's in-memory generator."""
    import tensorflow as tf

    from pipeline import skew

    def example(fare, payment):
        return tf.train.Example(features=tf.train.Features(feature={
            "fare": tf.train.Feature(float_list=tf.train.FloatList(value=[fare])),
            "payment_type": tf.train.Feature(bytes_list=tf.train.BytesList(value=[payment]))})).SerializeToString()

    statistics = skew.statistics_of([example(10.0, b"Cash"), example(20.0, b"Credit Card"), example(30.0, b"Cash")])
    dataset = statistics.datasets[0]
    assert dataset.num_examples == 3
    fare = next(f for f in dataset.features if f.path.step == ["fare"])
    assert fare.num_stats.mean == pytest.approx(20.0)


@pytest.mark.parametrize("tfxio_class", ["tf_example_record.TFExampleRecord", "raw_tf_record.RawTfRecordTFXIO",
                                         "tf_sequence_example_record.TFSequenceExampleRecord"])
def test_tfxio_record_source_replaces_the_source_tfx_bsls_record_tfxios_read_with(tmp_path, tfxio_class):
    """tfx_bsl's record TFXIOs (what TFX's StatisticsGen, Transform and Evaluator read through) build their
    source with the function tfx_internals.tfxio_record_source replaces, looked up at each call: inside the
    block the replacement is used, after it tfx_bsl's own again."""
    import importlib

    import apache_beam as beam

    module, name = tfxio_class.split(".")
    cls = getattr(importlib.import_module(f"tfx_bsl.tfxio.{module}"), name)
    pattern = str(tmp_path / "records*")
    (tmp_path / "records-0").write_bytes(b"")  # ReadFromTFRecord checks that the pattern matches a file
    seen = []

    def replacement(original):
        def read(file_pattern):
            seen.append(list(file_pattern))
            return original(file_pattern)
        return read

    def build():
        p = beam.Pipeline()
        extra = {"raw_record_column_name": "raw"} if name == "RawTfRecordTFXIO" else {}
        source = cls(file_pattern=pattern, telemetry_descriptors=["test"], **extra)
        _ = p | source.RawRecordBeamSource()

    with tfx_internals.tfxio_record_source(replacement):
        build()
    assert seen == [[pattern]]
    build()
    assert seen == [[pattern]]  # restored


def test_launch_node_does_what_local_dag_runners_loop_does():
    """LocalDagRunner compiles the pipeline with `tfx_runner._make_pipeline_proto`, gives it a run id and launches
    each node with a `launcher.Launcher` built from the deployment config: the steps tfx_internals.local_pipeline_ir
    and tfx_internals.launch_node copy (pipeline/concurrent_runner.py runs them two lanes at a time)."""
    import inspect
    import re

    from tfx.orchestration.local import local_dag_runner
    from tfx.orchestration.portable import launcher, tfx_runner

    assert callable(getattr(tfx_runner, "_make_pipeline_proto", None)), "tfx_runner._make_pipeline_proto is gone"
    source = inspect.getsource(local_dag_runner.LocalDagRunner.run_with_ir)
    for step in ("runtime_parameter_utils.substitute_runtime_parameter", "PIPELINE_RUN_ID_PARAMETER_NAME",
                 "runner_utils.extract_local_deployment_config", "runner_utils.extract_executor_spec",
                 "runner_utils.extract_custom_driver_spec", "launcher.Launcher(", ".launch()",
                 "execution_options.HasField('skip')"):
        assert step in source, f"LocalDagRunner.run_with_ir no longer has {step}: revisit tfx_internals.launch_node"
    built_with = set(re.findall(r"(\w+)=", source[source.index("launcher.Launcher("):source.index(".launch()")]))
    assert built_with == {"pipeline_node", "mlmd_connection", "pipeline_info", "pipeline_runtime_spec",
                          "executor_spec", "custom_driver_spec"}, built_with
    assert set(inspect.signature(launcher.Launcher).parameters) >= built_with
    ours = inspect.getsource(tfx_internals.launch_node)
    assert all(f"{name}=" in ours for name in built_with)


# ---- Beam: each DoFn's state and timer specs, worked out once (tfx_internals.memoize_dofn_specs) ------------

def test_beams_callers_look_up_get_dofn_specs_on_its_module_at_each_call():
    """memoize_dofn_specs replaces the module attribute: Beam's callers must reach it through the module."""
    import importlib.util

    def source(module: str) -> str:  # the .py beside a Cython build (runners/common is compiled)
        return Path(importlib.util.find_spec(module).origin).with_suffix("").with_suffix(".py").read_text()

    userstate = source("apache_beam.transforms.userstate")
    for function in ("is_stateful_dofn", "validate_stateful_dofn"):
        body = userstate.split(f"def {function}(", 1)[1].split("\ndef ", 1)[0]
        assert "get_dofn_specs(dofn)" in body, function
    for module in ("apache_beam.transforms.core", "apache_beam.runners.common",
                   "apache_beam.runners.direct.direct_runner", "apache_beam.runners.worker.bundle_processor"):
        text = source(module)
        assert "from apache_beam.transforms.userstate import get_dofn_specs" not in text, module
        assert "import get_dofn_specs" not in text and "import is_stateful_dofn" not in text, module
    assert "userstate.get_dofn_specs(self.fn)" in source("apache_beam.transforms.core")


def test_memoized_dofn_specs_are_beams_own_once_per_dofn_object():
    import apache_beam as beam
    from apache_beam.coders import VarIntCoder
    from apache_beam.transforms import userstate
    from apache_beam.transforms.timeutil import TimeDomain

    class Stateful(beam.DoFn):
        SEEN = userstate.BagStateSpec("seen", VarIntCoder())
        LATER = userstate.TimerSpec("later", TimeDomain.WATERMARK)

        def process(self, element, seen=beam.DoFn.StateParam(SEEN), later=beam.DoFn.TimerParam(LATER)):
            yield element

        @userstate.on_timer(LATER)
        def fire(self):
            pass

    class Plain(beam.DoFn):
        def process(self, element):
            yield element

    original = userstate.get_dofn_specs
    calls = []

    def counted(dofn):
        calls.append(dofn)
        return original(dofn)

    userstate.get_dofn_specs = counted
    try:
        stateful, plain = Stateful(), Plain()
        expected = original(stateful)
        from tfx.utils import dependency_utils

        flags = dependency_utils.make_beam_dependency_flags
        with tfx_internals.beam_steps_patched():  # both patches every Beam step runs with
            assert dependency_utils.make_beam_dependency_flags is not flags
            for _ in range(3):
                assert userstate.get_dofn_specs(stateful) == expected
                assert userstate.is_stateful_dofn(stateful) and not userstate.is_stateful_dofn(plain)
                userstate.validate_stateful_dofn(stateful)
            specs = userstate.get_dofn_specs(stateful)
            specs[0].clear()  # the caller's own sets: the next answer is whole
            assert userstate.get_dofn_specs(stateful) == expected
            assert userstate.get_dofn_specs(Stateful()) == expected  # another object: asked again
        assert calls.count(stateful) == 1 and calls.count(plain) == 1 and len(calls) == 3
        assert userstate.get_dofn_specs is counted  # both undone on leaving
        assert dependency_utils.make_beam_dependency_flags is flags
    finally:
        userstate.get_dofn_specs = original
    assert {spec.name for spec in expected[0]} == {"seen"} and {spec.name for spec in expected[1]} == {"ts-later"}
