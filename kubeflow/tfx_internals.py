"""Every use this project makes of what TFX (and Beam and tfx_bsl beneath it) does but does not promise, in one module.

Each function below relies on TFX 1.16 code that is not part of its public API (`tfx.v1`) or copies
what a TFX executor does; `tests/test_library_internals.py` runs or reads that TFX code and fails,
naming the function here, when an upgrade changes it. Subclassing a component's executor (Evaluator,
Transform, Trainer, Pusher, ExampleGen) is TFX's documented way of customising a component and is not
listed; re-implementing part of what an executor does is.

- `defer_tfx_components`: `tfx.components`' package `__init__` runs only when one of its names is used.
- `skip_tfx_sdist`: TFX's Beam executors stop packaging TFX for their workers.
- `write_blessing`: the blessing TFX's Evaluator executor writes for a validation result.
- `write_infra_blessing`, `stamped_model_dir`, `warmup_file`: the InfraBlessing TFX's InfraValidator writes
  and its Pusher reads, with the model to push inside.
- `mark_pushed`, `pushed_version`, `pushed_folder`: what TFX's Pusher records of a push and where it puts it;
  the artifact property names at the top, which the run view, history and rollback read.
- `output_place`, `earlier_outputs`: where the local orchestrator puts an execution's output folder.
- `splits_fingerprint`: ExampleGen's fingerprint of its input files.
- `trainer_fn_args`: the FnArgs TFX's Trainer executor hands `run_fn`.
- `tfxio_record_source`: the Beam source tfx_bsl's TFXIOs read record files with.
- `analyzer_cache_read_while_built`, `analyzer_cache_source`: the Beam source TFX's Transform reads TF-Transform's
  analyzer cache entries with.
- `memoize_dofn_specs`: Beam works out each DoFn's state and timer specs once.
- `patch_beam_steps`, `beam_steps_patched`: both of the above, which every Beam step of the project runs with.
- `example_gen_splitter`: the split TFX's ExampleGen puts a record in (components/arrow_csv_example_gen.py writes
  the splits itself on the DirectRunner).
- `local_pipeline_ir`, `launch_node`, `upstream_nodes`: what TFX's LocalDagRunner does before its loop and for
  each node in it, for a runner that launches independent nodes at once (pipeline/concurrent_runner.py).

The module is in `kubeflow/` because the lowest layer that needs it is there (each Kubeflow step's entry
point defers `tfx.components` and skips the sdist); components and the pipeline import it from here.
It imports TFX only inside its functions: importing it loads no TFX.
"""
from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import sys
import threading
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

log = logging.getLogger(__name__)

# Custom properties TFX's components set on their artifacts and the project reads back from ML Metadata
# (run view, history, rollback) without importing TFX: TFX keeps most of them as private constants.
BLESSED_KEY = "blessed"  # ModelBlessing and InfraBlessing: 1 blessed, 0 not
CURRENT_MODEL_ID_KEY = "current_model_id"  # ModelBlessing: the Model artifact the Evaluator judged
HAS_MODEL_KEY = "has_model"  # InfraBlessing: 1 when it holds the model to push (stamped_model_dir)
PUSHED_KEY = "pushed"  # PushedModel: 1 when a version is in the serving folder
PUSHED_VERSION_KEY = "pushed_version"  # PushedModel: that version's number
PUSHED_DESTINATION_KEY = "pushed_destination"  # PushedModel: that version's folder

# ---- tfx.components without its package __init__ --------------------------------------------------------

COMPONENTS_PACKAGE = "tfx.components"
_lock = threading.Lock()


def defer_tfx_components() -> None:
    """Make `tfx.components` load its `__init__` only when one of its names is asked for. Idempotent;
    does nothing if the package is already imported or TFX is not installed.

    TFX's package `__init__` imports all sixteen components with their executors, so the first import
    of any module under it (the Trainer's FnArgs helpers, one component class) also loads what this
    project never runs: InfraValidator's Kubernetes and Docker clients with `jsonschema`, the Tuner's
    `keras_tuner`, BulkInferrer, DistributionValidator, ExampleDiff. Imports up to a built pipeline
    (`from pipeline import configs, local_runner`, the local DAG runner, `create_pipeline(...)`), three
    interleaved pairs on a quiet machine: 7.03 / 7.38 / 7.01 s with the package `__init__`, 4.64 /
    5.02 / 4.67 s without it; a trainer worker's imports 11.8-12.9 s -> 8.0-8.9 s (bench/RESULTS.md,
    2026-12-02 (a)). Every process that runs TFX code defers it first: `components/__init__.py` (the local
    runs, trainer workers) and `kubeflow/entrypoint.py` (each Kubeflow step, whose TFX entry point
    imports the Evaluator's executor and, through the package, every other component).

    The package is registered as an empty module whose attribute lookups (PEP 562 `__getattr__`) run
    TFX's real `__init__` on first use, so `from tfx.components import Trainer`, `tfx.v1` and TFX's own
    tests keep working; only importing a submodule by its full path skips it.
    `importlib.util.LazyLoader` cannot do this: importing a submodule reads the package's `__path__`,
    which makes a lazy module load in full.
    """
    if COMPONENTS_PACKAGE in sys.modules:
        return
    try:
        spec = importlib.util.find_spec(COMPONENTS_PACKAGE)  # imports the `tfx` package (its version only)
    except ModuleNotFoundError:  # no TFX at all
        return
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    loaded = False

    def __getattr__(name: str):
        nonlocal loaded
        if name.startswith("__"):  # __path__, __file__ … are set; others (e.g. __wrapped__) do not exist
            raise AttributeError(name)
        with _lock:
            if not loaded:
                loaded = True
                del module.__getattr__  # from here on, the real module's own attributes
                spec.loader.exec_module(module)
        return getattr(module, name)

    module.__getattr__ = __getattr__
    sys.modules[COMPONENTS_PACKAGE] = module
    parent, _, child = COMPONENTS_PACKAGE.rpartition(".")
    setattr(sys.modules[parent], child, module)  # as the import system binds a package it loads: tfx.components


# ---- Beam workers: no sdist of TFX ----------------------------------------------------------------------

def skip_tfx_sdist() -> Callable[[], None]:
    """TFX's Beam executors take the pipeline options as given, without an sdist of TFX itself; returns the
    function that undoes it.

    Given any pipeline options, TFX's `BaseBeamExecutor.__init__` calls
    `dependency_utils.make_beam_dependency_flags`, which, unless an option names the workers'
    dependencies, copies the installed `tfx` tree to a new `/tmp` folder, builds an sdist of it and adds
    `--extra_package=<that sdist>` (pipeline/beam_runners.py: `beam_steps` says why none
    of the project's workers needs it). This replaces that function for as long as it is not undone.
    """
    from tfx.utils import dependency_utils

    def as_given(beam_pipeline_args: Sequence[str]) -> List[str]:
        log.info("Beam workers run this installation: no TFX sdist added to %s", beam_pipeline_args)
        return list(beam_pipeline_args)

    return _replaced(dependency_utils, "make_beam_dependency_flags", as_given)


def _replaced(module, name: str, replacement) -> Callable[[], None]:
    """Set `module.name` to `replacement`; returns the function that puts the original back."""
    original = getattr(module, name)
    setattr(module, name, replacement)
    return lambda: setattr(module, name, original)


@contextlib.contextmanager
def _undone_on_exit(apply: Callable[[], Callable[[], None]]) -> Iterator[None]:
    undo = apply()
    try:
        yield
    finally:
        undo()


# ---- Beam: each DoFn's state and timer specs, worked out once -------------------------------------------

def memoize_dofn_specs() -> Callable[[], None]:
    """Beam's `userstate.get_dofn_specs(dofn)` answers once per DoFn object; returns the function that undoes it.

    Beam 2.59 asks it about every DoFn about seven times while a pipeline is built and submitted (ParDo's
    constructor, `to_runner_api` three times, the direct runner's check for stateful DoFns) and twice more in
    each bundle processor, and each answer calls `inspect.signature` on every method of the DoFn. TF-Transform's
    analysis has a few hundred DoFns: on the default data (`taxi-pipeline run`, two alternated pairs,
    2026-12-07) Transform took 7.9 s with the answers kept and 8.9 s without, StatisticsGen 5.4-5.5 s against
    5.8 s. The answer depends only on the DoFn's methods, which do not change once it is built; Beam's callers
    (`userstate.is_stateful_dofn`, `validate_stateful_dofn`, `core.ParDo`, `runners.common`,
    `direct_runner`, `bundle_processor`) all look the function up on the module at each call. An object
    that cannot be weakly referenced is asked every time.
    """
    import weakref

    from apache_beam.transforms import userstate

    original = userstate.get_dofn_specs
    known: Dict[int, Tuple[Any, Tuple[Any, Any]]] = {}  # id(dofn) -> (weak reference to it, its specs)

    def get_dofn_specs(dofn):
        key = id(dofn)
        hit = known.get(key)
        if hit is None or hit[0]() is not dofn:
            specs = original(dofn)
            try:
                known[key] = hit = (weakref.ref(dofn, lambda _, key=key: known.pop(key, None)), specs)
            except TypeError:
                return specs
        state_specs, timer_specs = hit[1]
        return set(state_specs), set(timer_specs)  # the caller's own sets, as Beam's function returns

    return _replaced(userstate, "get_dofn_specs", get_dofn_specs)


# ---- What every Beam step runs with ----------------------------------------------------------------------

def patch_beam_steps() -> Callable[[], None]:
    """`skip_tfx_sdist` and `memoize_dofn_specs`: what every Beam step of the project runs with (a local run's
    two processes, batch scoring, each Kubeflow step); returns the function that undoes both."""
    undo_sdist = skip_tfx_sdist()
    undo_specs = memoize_dofn_specs()

    def undo() -> None:
        undo_specs()
        undo_sdist()

    return undo


def beam_steps_patched():
    """`patch_beam_steps` within the block."""
    return _undone_on_exit(patch_beam_steps)


# ---- TFXIO's record-file source -------------------------------------------------------------------------

@contextlib.contextmanager
def tfxio_record_source(replacement: Callable[[Any], Any]) -> Iterator[None]:
    """Within the block, every TFXIO record-file source built is `replacement(tfx_bsl's own)`.

    tfx_bsl's TFXIOs for record files (`TFExampleRecord`, `TFSequenceExampleRecord`, `RawTfRecordTFXIO`,
    `TFRecordToTensorTFXIO`: what TFX's StatisticsGen, Transform and Evaluator read through) all build their
    `_RawRecordBeamSourceInternal` by calling `tfx_bsl.tfxio.record_based_tfxio.ReadTfRecord(file_pattern)`,
    a PTransform of a pipeline into its records' bytes, looked up on the module at each call. `replacement`
    takes that function and returns one of the same signature.
    """
    from tfx_bsl.tfxio import record_based_tfxio

    original = record_based_tfxio.ReadTfRecord
    record_based_tfxio.ReadTfRecord = replacement(original)
    try:
        yield
    finally:
        record_based_tfxio.ReadTfRecord = original


# ---- TF-Transform's analyzer cache, read while the pipeline is built ------------------------------------

# Above this many bytes of (compressed) cache files, an entry is read by Beam as TFX would: a Create embeds its
# records in the pipeline graph, which every Beam worker is sent and which runners limit (Dataflow's job graph to
# 10 MB). The taxi pipeline's entries were 0.3-2 KB each after 300-row spans: quantile sketches, and vocabularies
# of a few hundred values, which grow with the distinct values, not the rows.
CACHE_ENTRY_IN_GRAPH_MAX_BYTES = 64 << 10


@contextlib.contextmanager
def analyzer_cache_read_while_built() -> Iterator[None]:
    """Within the block, TFX's Transform reads its analyzer cache through `analyzer_cache_source()`.

    TFX's Transform executor runs a `TransformProcessor` it builds itself, whose `_RunBeamImpl` asks its static
    `_GetCacheSource()` for the PTransform class to read each cache entry with (None: TF-Transform's default,
    Beam's ReadFromTFRecord) and hands it to `tensorflow_transform.beam.analyzer_cache.ReadAnalysisCacheFromFS`
    as `source`; the executor gives no way to choose it.
    """
    from tfx.components.transform import executor as transform_executor

    processor = transform_executor.TransformProcessor
    original = processor.__dict__["_GetCacheSource"]
    processor._GetCacheSource = staticmethod(analyzer_cache_source)
    try:
        yield
    finally:
        processor._GetCacheSource = original


def analyzer_cache_source():
    """A PTransform class that reads one analyzer cache entry, built with the entry's file pattern and applied
    to the pipeline as TF-Transform's ReadAnalysisCacheFromFS does with its `source`.

    It reads a small entry's files while the pipeline is built and gives their records as one Create,
    the same bytes ReadFromTFRecord gives (Beam's own TFRecord framing, compression from the file name); a
    larger entry it leaves to ReadFromTFRecord. Each cached dataset has about 20 entries (one per analyzer
    accumulator), and each ReadFromTFRecord is several Beam stages, run one after the other."""
    import apache_beam as beam
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.io.tfrecordio import _TFRecordUtil

    class ReadCacheEntry(beam.PTransform):
        def __init__(self, file_pattern: str):
            super().__init__()
            self._pattern = file_pattern

        def expand(self, pbegin):
            files = FileSystems.match([self._pattern])[0].metadata_list
            if sum(f.size_in_bytes for f in files) > CACHE_ENTRY_IN_GRAPH_MAX_BYTES:
                return pbegin | "ReadFromTFRecord" >> beam.io.ReadFromTFRecord(self._pattern)
            records = []
            for f in sorted(files, key=lambda f: f.path):
                with FileSystems.open(f.path) as handle:  # CompressionTypes.AUTO: .gz is gzip, as ReadFromTFRecord
                    record = _TFRecordUtil.read_record(handle)
                    while record is not None:
                        records.append(record)
                        record = _TFRecordUtil.read_record(handle)
            return pbegin | "CreateFromFiles" >> beam.Create(records, reshuffle=False)

    return ReadCacheEntry


# ---- the Evaluator's blessing ---------------------------------------------------------------------------

def write_blessing(blessing, model, baseline, exec_properties: Dict[str, Any], validation_ok: bool) -> None:
    """What TFX's Evaluator executor (`tfx.components.evaluator.executor.Executor.Do`, after TFMA has run)
    writes on its ModelBlessing: the models' URIs and ids, the component id, and the BLESSED or NOT_BLESSED
    file with the `blessed` property. `baseline` None: no baseline model was given."""
    from tfx.components.evaluator import constants
    from tfx.utils import io_utils

    blessing.set_string_custom_property(constants.ARTIFACT_PROPERTY_CURRENT_MODEL_URI_KEY, model.uri)
    blessing.set_int_custom_property(constants.ARTIFACT_PROPERTY_CURRENT_MODEL_ID_KEY, model.id)
    if baseline is not None:
        blessing.set_string_custom_property(constants.ARTIFACT_PROPERTY_BASELINE_MODEL_URI_KEY, baseline.uri)
        blessing.set_int_custom_property(constants.ARTIFACT_PROPERTY_BASELINE_MODEL_ID_KEY, baseline.id)
    if "current_component_id" in exec_properties:
        blessing.set_string_custom_property("component_id", exec_properties["current_component_id"])
    name = constants.BLESSED_FILE_NAME if validation_ok else constants.NOT_BLESSED_FILE_NAME
    io_utils.write_string_file(os.path.join(blessing.uri, name), "")
    blessing.set_int_custom_property(constants.ARTIFACT_PROPERTY_BLESSED_KEY,
                                     constants.BLESSED_VALUE if validation_ok else constants.NOT_BLESSED_VALUE)


# ---- the InfraValidator's blessing, as the Pusher reads it ---------------------------------------------

def stamped_model_dir(blessing_uri: str) -> str:
    """Where an InfraBlessing keeps the model to push (`path_utils.stamped_model_path`)."""
    from tfx.utils import path_utils

    return path_utils.stamped_model_path(blessing_uri)


def warmup_file(model_dir: str) -> str:
    """A SavedModel's warmup records, as InfraValidator writes them (`path_utils.warmup_file_path`)."""
    from tfx.utils import path_utils

    return path_utils.warmup_file_path(model_dir)


def write_infra_blessing(blessing, blessed: bool, has_model: bool, note: str = "") -> None:
    """What TFX's InfraValidator executor writes on its InfraBlessing (`_mark_blessed`, `_mark_not_blessed`,
    `_CreateWarmupModel`) and TFX's Pusher reads (`model_utils.is_infra_validated`, `GetModelPath`): the
    `blessed` property, `has_model` 1 when `stamped_model_dir` holds the model to push, and the
    INFRA_BLESSED or INFRA_NOT_BLESSED file (holding `note` here; InfraValidator leaves it empty)."""
    from tfx.dsl.io import fileio

    blessing.set_int_custom_property(BLESSED_KEY, int(blessed))
    blessing.set_int_custom_property(HAS_MODEL_KEY, int(has_model))
    with fileio.open(os.path.join(blessing.uri, "INFRA_BLESSED" if blessed else "INFRA_NOT_BLESSED"), "w") as f:
        f.write(note)


# ---- the Pusher's record of a push ---------------------------------------------------------------------

def mark_pushed(pusher_executor, pushed, destination: str, version: str) -> None:
    """Record on a PushedModel that `version` is in the serving folder at `destination`, as TFX's Pusher
    records its own pushes (its protected `_MarkPushed`): PUSHED_KEY 1, the folder and the version."""
    pusher_executor._MarkPushed(pushed, pushed_destination=destination, pushed_version=version)  # noqa: SLF001


def pushed_version(pushed) -> Optional[str]:
    """The version a PushedModel records as pushed, None when it pushed nothing."""
    if pushed.get_int_custom_property(PUSHED_KEY) != 1:
        return None
    return pushed.get_string_custom_property(PUSHED_VERSION_KEY)


def pushed_folder(base_directory: str, version: str) -> str:
    """Where TFX's Pusher puts a version under a filesystem destination: `<base>/<version>`."""
    return os.path.join(base_directory, version)


# ---- where an execution's outputs are -------------------------------------------------------------------

class OutputPlace(NamedTuple):
    """An output folder as TFX's local orchestrator makes it: `<pipeline root>/<node id>/<key>/<execution id>`
    (`tfx.orchestration.portable.outputs_utils.generate_output_artifacts`)."""
    node_dir: str
    key: str
    execution: str


def output_place(output_uri: str) -> OutputPlace:
    execution_dir = output_uri.rstrip("/")
    key_dir = os.path.dirname(execution_dir)
    return OutputPlace(os.path.dirname(key_dir), os.path.basename(key_dir), os.path.basename(execution_dir))


def earlier_outputs(output_uri: str) -> List[Tuple[int, str]]:
    """(execution id, folder) of the same node's same output in its other executions, oldest first."""
    from tfx.dsl.io import fileio

    parent = os.path.dirname(output_uri.rstrip("/"))
    found = []
    for folder in fileio.listdir(parent) if fileio.exists(parent) else []:
        name = folder.rstrip("/")
        uri = os.path.join(parent, name)
        if name.isdigit() and uri != output_uri.rstrip("/"):
            found.append((int(name), uri))
    return sorted(found)


# ---- ExampleGen's input fingerprint ---------------------------------------------------------------------

def splits_fingerprint(input_base: str, input_config) -> str:
    """ExampleGen's fingerprint of the files each split's pattern matches under `input_base` (names, sizes,
    modification times): `tfx.components.example_gen.utils.calculate_splits_fingerprint_span_and_version`,
    what TFX's ExampleGen driver compares to decide whether its input changed. `input_config`: an
    `example_gen_pb2.Input`."""
    from tfx.components.example_gen import utils

    found, _, _ = utils.calculate_splits_fingerprint_span_and_version(input_base, input_config.splits)
    return found


# ---- the Trainer's FnArgs -------------------------------------------------------------------------------

def trainer_fn_args(input_dict: Dict[str, List[Any]], output_dict: Dict[str, List[Any]],
                    exec_properties: Dict[str, Any]):
    """The FnArgs TFX's Trainer executor (`GenericExecutor.Do`) builds and passes to `run_fn`, built by its
    own (protected) `_GetFnArgs`: a trainer worker process rebuilds them from the serialized execution."""
    from tfx.components.trainer import executor as trainer_executor

    return trainer_executor.GenericExecutor()._GetFnArgs(input_dict, output_dict, exec_properties)  # noqa: SLF001



# ---- the local orchestrator's launch of one node --------------------------------------------------------
# `tfx/orchestration/local/local_dag_runner.py` at v1.16.0: `LocalDagRunner.run` compiles the pipeline
# (`tfx_runner._make_pipeline_proto`), `run_with_ir` gives it a run id (lines 55-59) and then, in its loop
# over the nodes in topological order (lines 87-110), builds one `launcher.Launcher` per node with a new
# MLMD connection and calls `launch()`. The two functions below are those two steps, unchanged.

def local_pipeline_ir(pipeline):
    """The pipeline's IR (`pipeline_pb2.Pipeline`) compiled and given a run id, as LocalDagRunner runs it."""
    import datetime

    from tfx.dsl.compiler import constants
    from tfx.orchestration.portable import runtime_parameter_utils, tfx_runner

    ir = tfx_runner._make_pipeline_proto(pipeline)  # noqa: SLF001
    runtime_parameter_utils.substitute_runtime_parameter(
        ir, {constants.PIPELINE_RUN_ID_PARAMETER_NAME: datetime.datetime.now().isoformat()})
    return ir


def upstream_nodes(ir) -> Dict[str, List[str]]:
    """Node id -> the ids of the nodes it runs after, in the IR's (topological) order of the nodes."""
    return {node.pipeline_node.node_info.id: list(node.pipeline_node.upstream_nodes) for node in ir.nodes}


def launch_node(ir, node_id: str) -> None:
    """Run one node of `ir` as LocalDagRunner's loop does: its driver, executor and publisher, with MLMD's
    cache. A node skipped by a partial run is not launched."""
    from tfx.orchestration import metadata
    from tfx.orchestration.local import runner_utils
    from tfx.orchestration.portable import launcher

    deployment_config = runner_utils.extract_local_deployment_config(ir)
    connection = deployment_config.metadata_connection_config
    connection_config = getattr(connection, connection.WhichOneof("connection_config"))
    node = next(n.pipeline_node for n in ir.nodes if n.pipeline_node.node_info.id == node_id)
    if node.execution_options.HasField("skip"):
        return
    launcher.Launcher(
        pipeline_node=node,
        mlmd_connection=metadata.Metadata(connection_config),
        pipeline_info=ir.pipeline_info,
        pipeline_runtime_spec=ir.runtime_spec,
        executor_spec=runner_utils.extract_executor_spec(deployment_config, node_id),
        custom_driver_spec=runner_utils.extract_custom_driver_spec(deployment_config, node_id),
    ).launch()


# ---- ExampleGen's hash split ----------------------------------------------------------------------------

def example_gen_splitter(buckets: List[int], split_config) -> Callable[[bytes], int]:
    """record -> the index of the split TFX's ExampleGen puts that serialized record in: its own partition
    function (`base_example_gen_executor._PartitionFn`: sha256 of the record, modulo the buckets), which its Beam
    path applies with `beam.Partition`. `buckets`: the cumulative hash buckets of the splits, as that path makes
    them."""
    import functools

    from tfx.components.example_gen import base_example_gen_executor

    return functools.partial(base_example_gen_executor._PartitionFn, num_partitions=len(buckets),  # noqa: SLF001
                             buckets=buckets, split_config=split_config)
