"""TF Serving's own test SavedModels, rebuilt here so the tests need nothing outside the repository.

TensorFlow Serving tests its model server against a handful of tiny SavedModels kept in
tensorflow/serving under `tensorflow_serving/servables/tensorflow/testdata/`. Their interface is
what TF Serving's tests and its published metadata answers (`*_metadata.json` there) pin down, so
a server that claims to answer as TF Serving does is checked against the same models.
`build_tf_serving_testdata(root)` writes models with the same directory names, signature keys,
method names, tensor names, dtypes, shapes, variables and assets:

| directory                                          | what it is                                   |
| -------------------------------------------------- | -------------------------------------------- |
| saved_model_half_plus_two_cpu/00000123             | TF1 graph, y = 0.5x + 2: predict, classify,  |
|                                                    | 3 regress signatures; assets/foo.txt         |
| saved_model_half_plus_two_2_versions/00000123,124  | the older TF1 export of the same model       |
|                                                    | (adds classify_x2_to_y3; legacy_init_op)     |
| saved_model_half_plus_three/00000123               | y = 0.5x + 3, a TF 1.0 export: TensorInfos   |
|                                                    | without shapes; assets/foo.txt               |
| saved_model_half_plus_two_tf2_cpu/00000123         | native TF2 (tf.Module, tf.function)          |
| saved_model_counter/00000123                       | stateful TF1 reference variable, 4 signatures|

Each builder says which upstream generator (or, for models older than TF Serving's own generator,
which graph) it reproduces. The TF1 models are built in graph mode through `tf.compat.v1` with
reference variables (`VariableV2`, `DT_FLOAT_REF` outputs) as TF 1.x made them; their assets are
recorded in the `saved_model_assets` collection as TF 1.x's builder wrote them (TF 2's builder writes
`asset_file_def`), so a server is exercised on both forms. Building all of them takes a few seconds.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Dict

import serving  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

HALF_PLUS_TWO_CPU = "saved_model_half_plus_two_cpu"
HALF_PLUS_TWO_2_VERSIONS = "saved_model_half_plus_two_2_versions"
HALF_PLUS_THREE = "saved_model_half_plus_three"
HALF_PLUS_TWO_TF2_CPU = "saved_model_half_plus_two_tf2_cpu"
COUNTER = "saved_model_counter"
MODELS = (HALF_PLUS_TWO_CPU, HALF_PLUS_TWO_2_VERSIONS, HALF_PLUS_THREE, HALF_PLUS_TWO_TF2_CPU, COUNTER)

VERSION = "00000123"
SECOND_VERSION = "00000124"  # saved_model_half_plus_two_2_versions only
ASSET_FILENAME = "foo.txt"
ASSET_CONTENTS = "asset-file-contents"

PREDICT = "tensorflow/serving/predict"
CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"


def build_tf_serving_testdata(root) -> Dict[str, Path]:
    """Write every model under `root` (created if needed); returns {directory name: model base path}.

    `root` then looks like TF Serving's testdata directory: `root/<name>/<version>/saved_model.pb`.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as staging:  # the asset's source; each model copies it in
        asset = _write_asset_source(Path(staging))
        half_plus_two_cpu(root / HALF_PLUS_TWO_CPU / VERSION, asset)
        first = root / HALF_PLUS_TWO_2_VERSIONS / VERSION
        half_plus_two_tf1_1(first, asset)
        shutil.copytree(first, root / HALF_PLUS_TWO_2_VERSIONS / SECOND_VERSION)  # upstream's are identical
        half_plus_three(root / HALF_PLUS_THREE / VERSION, asset)
        half_plus_two_tf2(root / HALF_PLUS_TWO_TF2_CPU / VERSION, asset)
        counter(root / COUNTER / VERSION)
    return {name: root / name for name in MODELS}


# ---------------------------------------------------------------------------------------------
# Shared pieces of the TF1 half_plus_two/three graphs.

def _write_asset_source(directory: Path) -> str:
    """The asset file every half_plus_* model carries (upstream writes it to /tmp/original/export)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / ASSET_FILENAME
    path.write_text(ASSET_CONTENTS)
    return str(path)


def _v1():
    import tensorflow as tf

    return tf.compat.v1


def _ref_variable(value, name, **kwargs):
    """A TF1 reference variable (VariableV2), not the resource variable TF 2 would make."""
    return _v1().Variable(value, name=name, use_resource=False, **kwargs)


def _asset_init_op(asset_path: str):
    """TF1 assets: the file's path as a constant in ASSET_FILEPATHS, and an init op that sets a
    `filename_tensor` variable to its base name (upstream's `_create_asset_file`)."""
    v1 = _v1()
    path_tensor = v1.constant(asset_path)
    v1.add_to_collection(v1.GraphKeys.ASSET_FILEPATHS, path_tensor)
    filename = _ref_variable(ASSET_FILENAME, "filename_tensor", trainable=False, collections=[])
    return filename.assign(ASSET_FILENAME)


def _feature_spec():
    """tf.Examples carry "x" (required) and "x2" (default 0.0), one float each."""
    import tensorflow as tf

    return {"x": tf.io.FixedLenFeature([1], tf.float32),
            "x2": tf.io.FixedLenFeature([1], tf.float32, default_value=[0.0])}


def _parse_example_v1(serialized, with_x2: bool = True):
    """TF 1.x's `tf.parse_example` of `_feature_spec()` as the graph it built: one (v1)
    `ParseExample` op under a `ParseExample` scope, dense features of static shape [-1, 1] even
    for an unknown-rank input. (TF 2's parse_example makes `ParseExampleV2`, whose outputs have
    unknown shape when the input's rank is unknown, so signatures would lose their [-1, 1].)"""
    import tensorflow as tf

    with tf.name_scope("ParseExample"):
        defaults = [tf.constant([], tf.float32)]  # "x" is required: an empty default
        keys, shapes = ["x"], [[1]]
        if with_x2:
            defaults.append(tf.reshape(tf.constant([0.0], name="key_x2"), [1]))
            keys.append("x2")
            shapes.append([1])
        parsed = tf.raw_ops.ParseExample(serialized=serialized, names=[], sparse_keys=[], dense_keys=keys,
                                         dense_defaults=defaults, sparse_types=[], dense_shapes=shapes,
                                         name="ParseExample")
    return dict(zip(keys, parsed.dense_values))


def _line(a, x, b, name=None):
    """a*x + b with TF 1.x's ops (`Mul`, `Add`; TF 2's tf.add makes `AddV2`)."""
    import tensorflow as tf

    return tf.raw_ops.Add(x=tf.multiply(a, x), y=b, name=name or "Add")


def _signature(method: str, inputs: dict, outputs: dict):
    build = _v1().saved_model.utils.build_tensor_info
    return _v1().saved_model.signature_def_utils.build_signature_def(
        {k: build(t) for k, t in inputs.items()}, {k: build(t) for k, t in outputs.items()}, method)


def _save_tf1(export_dir: Path, session, signatures, main_op=None, legacy_init_op=None) -> None:
    """SavedModelBuilder with the `serve` tag. A `legacy_init_op` is recorded under its own
    collection key, as TF 1.0/1.1 did (TF 2's builder would store it as the main op)."""
    v1 = _v1()
    if legacy_init_op is not None:
        v1.add_to_collection("legacy_init_op", legacy_init_op)
    builder = v1.saved_model.Builder(str(export_dir))
    builder.add_meta_graph_and_variables(
        session, [v1.saved_model.tag_constants.SERVING], signature_def_map=signatures,
        assets_collection=v1.get_collection(v1.GraphKeys.ASSET_FILEPATHS), main_op=main_op)
    builder.save()
    _assets_as_tf1_collection(export_dir)


def _assets_as_tf1_collection(export_dir: Path) -> None:
    """Move the MetaGraph's `asset_file_def` entries into the `saved_model_assets` collection: the
    form TF 1.x's builder wrote, which TF Serving's testdata models carry. Loaders read both."""
    from tensorflow.core.protobuf import saved_model_pb2

    path = Path(export_dir) / "saved_model.pb"
    model = saved_model_pb2.SavedModel()
    model.ParseFromString(path.read_bytes())
    meta_graph = model.meta_graphs[0]
    if not meta_graph.asset_file_def:
        return
    collection = meta_graph.collection_def["saved_model_assets"].any_list
    for asset in meta_graph.asset_file_def:
        collection.value.add().Pack(asset)
    del meta_graph.asset_file_def[:]
    path.write_bytes(model.SerializeToString())


# ---------------------------------------------------------------------------------------------
# saved_model_half_plus_two_cpu

def half_plus_two_cpu(export_dir, asset_path: str) -> Path:
    """TF1 half_plus_two as in `saved_model_half_plus_two_cpu`.

    Ports tensorflow/serving `tensorflow_serving/servables/tensorflow/testdata/saved_model_half_plus_two.py`
    (`_generate_saved_model_for_half_plus_two`, device cpu) at the revision that exported this model
    (commit 3ba8a6d8, Sept. 2019): the `tf_example` placeholder has no shape (the current script
    gives it [None]), x2 has its own variables a2 and c2, model ops pinned to /cpu:0, and the asset
    op is the SavedModel main op. Signatures: serving_default (predict x -> y), classify_x_to_y,
    regress_x_to_y, regress_x_to_y2 (on serialized tf.Examples), regress_x2_to_y3 (on x2).
    """
    import tensorflow as tf

    v1 = _v1()
    with tf.Graph().as_default(), v1.Session() as session:
        with tf.device("/cpu:0"):
            a = _ref_variable(0.5, "a")
            b = _ref_variable(2.0, "b")
            c = _ref_variable(3.0, "c")
            serialized = v1.placeholder(tf.string, name="tf_example")
            features = _parse_example_v1(serialized)
            x = tf.identity(features["x"], name="x")
            y = tf.identity(_line(a, x, b), name="y")
            y2 = tf.identity(_line(a, x, c), name="y2")
            x2 = tf.identity(features["x2"], name="x2")
            # Separate variables for the x2 path (upstream: keeps optimizers from fusing the paths).
            a2 = _ref_variable(0.5, "a2")
            c2 = _ref_variable(3.0, "c2")
            y3 = tf.identity(_line(a2, x2, c2), name="y3")
        assign_filename = _asset_init_op(asset_path)
        signatures = {
            "regress_x_to_y": _signature(REGRESS, {"inputs": serialized}, {"outputs": y}),
            "regress_x_to_y2": _signature(REGRESS, {"inputs": serialized}, {"outputs": y2}),
            "regress_x2_to_y3": _signature(REGRESS, {"inputs": x2}, {"outputs": y3}),
            "classify_x_to_y": _signature(CLASSIFY, {"inputs": serialized}, {"scores": y}),
            "serving_default": _signature(PREDICT, {"x": x}, {"y": y}),
        }
        main_op = tf.group(assign_filename)
        session.run(v1.global_variables_initializer())
        _save_tf1(Path(export_dir), session, signatures, main_op=main_op)
    return Path(export_dir)


# ---------------------------------------------------------------------------------------------
# saved_model_half_plus_two_2_versions (both versions)

def half_plus_two_tf1_1(export_dir, asset_path: str) -> Path:
    """TF1 half_plus_two as in `saved_model_half_plus_two_2_versions/0000012{3,4}`.

    Those two (identical) versions predate TF Serving's own generator: their MetaGraph records
    TensorFlow 1.1, i.e. TensorFlow's `tensorflow/python/saved_model/example/saved_model_half_plus_two.py`
    of that release. Rebuilt from the graph they carry: no device pinning, y3 = a*x2 + c on the
    same variables, a sixth signature classify_x2_to_y3, the asset op as `legacy_init_op`.
    """
    import tensorflow as tf

    v1 = _v1()
    with tf.Graph().as_default(), v1.Session() as session:
        a = _ref_variable(0.5, "a")
        b = _ref_variable(2.0, "b")
        c = _ref_variable(3.0, "c")
        serialized = v1.placeholder(tf.string, name="tf_example")
        features = _parse_example_v1(serialized)
        x = tf.identity(features["x"], name="x")
        y = _line(a, x, b, name="y")
        y2 = _line(a, x, c, name="y2")
        x2 = tf.identity(features["x2"], name="x2")
        y3 = _line(a, x2, c, name="y3")
        assign_filename = _asset_init_op(asset_path)
        signatures = {
            "regress_x_to_y": _signature(REGRESS, {"inputs": serialized}, {"outputs": y}),
            "regress_x_to_y2": _signature(REGRESS, {"inputs": serialized}, {"outputs": y2}),
            "regress_x2_to_y3": _signature(REGRESS, {"inputs": x2}, {"outputs": y3}),
            "classify_x_to_y": _signature(CLASSIFY, {"inputs": serialized}, {"scores": y}),
            "classify_x2_to_y3": _signature(CLASSIFY, {"inputs": x2}, {"scores": y3}),
            "serving_default": _signature(PREDICT, {"x": x}, {"y": y}),
        }
        legacy_init_op = tf.group(assign_filename)
        session.run(v1.global_variables_initializer())
        _save_tf1(Path(export_dir), session, signatures, legacy_init_op=legacy_init_op)
    return Path(export_dir)


# ---------------------------------------------------------------------------------------------
# saved_model_half_plus_three

def half_plus_three(export_dir, asset_path: str) -> Path:
    """y = 0.5x + 3 as in `saved_model_half_plus_three/00000123` (MetaGraph: TensorFlow 1.0.0-rc2).

    Like the half_plus_two example of TensorFlow 1.0 with b = 3: x comes from tf.Examples, x2 is a
    plain placeholder (y2 = a*x2 + c), and the signatures are the 1.0-era ones, whose TensorInfos
    carry a name and dtype but no shape: serving_default (predict x -> y) and one regress signature
    keyed by its method name, `tensorflow/serving/regress`, from `tf_example` to an identity of y.
    That export recorded `tf_example` (a string placeholder) as DT_FLOAT; kept, since the metadata
    TF Serving answers shows it so. The asset op is the `legacy_init_op`.
    """
    import tensorflow as tf
    from tensorflow.core.protobuf import meta_graph_pb2

    v1 = _v1()

    def info(tensor, dtype=None):  # 1.0-era TensorInfo: name and dtype only
        return meta_graph_pb2.TensorInfo(name=tensor.name, dtype=(dtype or tensor.dtype).as_datatype_enum)

    def signature(method, inputs, outputs):
        sig = meta_graph_pb2.SignatureDef(method_name=method)
        for key, value in inputs.items():
            sig.inputs[key].CopyFrom(value)
        for key, value in outputs.items():
            sig.outputs[key].CopyFrom(value)
        return sig

    with tf.Graph().as_default(), v1.Session() as session:
        a = _ref_variable(0.5, "a")
        b = _ref_variable(3.0, "b")
        c = _ref_variable(3.0, "c")
        serialized = v1.placeholder(tf.string, name="tf_example")
        x = tf.identity(_parse_example_v1(serialized, with_x2=False)["x"], name="x")
        y = _line(a, x, b, name="y")
        x2 = v1.placeholder(tf.float32, name="x2")
        _line(a, x2, c, name="y2")
        assign_filename = _asset_init_op(asset_path)
        regress_output = tf.identity(y)
        signatures = {
            "serving_default": signature(PREDICT, {"x": info(x)}, {"y": info(y)}),
            REGRESS: signature(REGRESS, {"inputs": info(serialized, tf.float32)},
                               {"outputs": info(regress_output)}),
        }
        legacy_init_op = tf.group(assign_filename)
        session.run(v1.global_variables_initializer())
        _save_tf1(Path(export_dir), session, signatures, legacy_init_op=legacy_init_op)
    return Path(export_dir)


# ---------------------------------------------------------------------------------------------
# saved_model_half_plus_two_tf2_cpu

def half_plus_two_tf2(export_dir, asset_path: str) -> Path:
    """Native TF2 half_plus_two as in `saved_model_half_plus_two_tf2_cpu/00000123`.

    Ports the `HalfPlusTwoModel` tf.Module of tensorflow/serving
    `tensorflow_serving/servables/tensorflow/testdata/saved_model_half_plus_two.py` (tf2=True):
    variables a, b, c and a tf.saved_model.Asset; every signature has method name predict (TF2's
    saver writes no other); serving_default takes x of shape [1] with a default value [0.0] (so x
    is optional in a Predict request); regress_x_to_y, regress_x_to_y2 and classify_x_to_y take
    serialized tf.Examples of shape [None] as `inputs`; regress_x2_to_y3 and classify_x2_to_y3 take
    `inputs` of shape [1]. Outputs: y, outputs, scores. y = 0.5x + 2, y2 = y3 = 0.5x + 3.
    """
    import tensorflow as tf

    examples = tf.TensorSpec([None], tf.string, name="inputs")
    one_float = tf.TensorSpec([1], tf.float32, name="inputs")

    class HalfPlusTwo(tf.Module):
        def __init__(self):
            super().__init__()
            self.a = tf.Variable(0.5, name="a")
            self.b = tf.Variable(2.0, name="b")
            self.c = tf.Variable(3.0, name="c")
            self.asset = tf.saved_model.Asset(asset_path)

        def _line(self, x, offset):
            return tf.add(tf.multiply(self.a, x), offset)

        def _x(self, serialized):
            return tf.io.parse_example(serialized, _feature_spec())["x"]

        @tf.function(input_signature=[tf.TensorSpec([1], tf.float32)])
        def predict(self, x=tf.constant([0.0], shape=[1], dtype=tf.float32)):
            return {"y": self._line(x, self.b)}

        @tf.function(input_signature=[examples])
        def regress_xy(self, serialized):
            return {"outputs": self._line(self._x(serialized), self.b)}

        @tf.function(input_signature=[examples])
        def regress_xy2(self, serialized):
            return {"outputs": self._line(self._x(serialized), self.c)}

        @tf.function(input_signature=[one_float])
        def regress_x2y3(self, x2):
            return {"outputs": self._line(x2, self.c)}

        @tf.function(input_signature=[examples])
        def classify_xy(self, serialized):
            return {"scores": self._line(self._x(serialized), self.b)}

        @tf.function(input_signature=[one_float])
        def classify_x2y3(self, x2):
            return {"scores": self._line(x2, self.c)}

    model = HalfPlusTwo()
    tf.saved_model.save(model, str(export_dir), signatures={
        "regress_x_to_y": model.regress_xy,
        "regress_x_to_y2": model.regress_xy2,
        "regress_x2_to_y3": model.regress_x2y3,
        "classify_x_to_y": model.classify_xy,
        "classify_x2_to_y3": model.classify_x2y3,
        "serving_default": model.predict,
    })
    return Path(export_dir)


# ---------------------------------------------------------------------------------------------
# saved_model_counter

def counter(export_dir) -> Path:
    """The stateful counter as in `saved_model_counter/00000123`.

    Ports tensorflow/serving `tensorflow_serving/servables/tensorflow/testdata/export_counter.py`:
    one TF1 reference variable `counter` (0.0) and four predict signatures with output `output`
    (DT_FLOAT_REF): get_counter, incr_counter (+1), incr_counter_by (+ input `delta`, a float
    placeholder of unknown shape), reset_counter (= 0). State persists across Session runs.
    """
    import tensorflow as tf

    v1 = _v1()
    with tf.Graph().as_default(), v1.Session() as session:
        value = _ref_variable(0.0, "counter", dtype=tf.float32)
        with v1.name_scope("incr_counter_op", values=[value]):
            incremented = value.assign_add(1.0)
        delta = v1.placeholder(tf.float32, name="delta")
        with v1.name_scope("incr_counter_by_op", values=[value, delta]):
            incremented_by = value.assign_add(delta)
        with v1.name_scope("reset_counter_op", values=[value]):
            reset = value.assign(0.0)
        session.run(v1.global_variables_initializer())
        signatures = {
            "get_counter": _signature(PREDICT, {}, {"output": value}),
            "incr_counter": _signature(PREDICT, {}, {"output": incremented}),
            "incr_counter_by": _signature(PREDICT, {"delta": delta}, {"output": incremented_by}),
            "reset_counter": _signature(PREDICT, {}, {"output": reset}),
        }
        _save_tf1(Path(export_dir), session, signatures)
    return Path(export_dir)


def model_path(root, name: str, version: str = VERSION) -> str:
    """`root/<name>/<version>` as a string (e.g. for tf.saved_model.load)."""
    return os.path.join(str(root), name, version)
