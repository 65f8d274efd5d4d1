"""What TF Serving's test models look like, and what TF Serving answers for them (see testdata/README.md).

`testdata/tf_serving_models.json` states, per model of TF Serving's testdata, its versions, variable
values, asset and signatures; `signatures_of` and `variables_of` read the same facts off a SavedModel
on disk, so a test compares the two. `metadata_json` renders TF Serving's REST `GetModelMetadata`
answer for a TF1 model of that table, in the exact JSON form of tensorflow/serving's published
expectations `tensorflow_serving/servables/tensorflow/testdata/half_plus_two_model_metadata.json`
and `saved_model_half_plus_two_2_versions_metadata.json` (every field printed, int64 as strings).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

SPEC_FILE = Path(__file__).resolve().parent / "testdata" / "tf_serving_models.json"

# The REST metadata answers TF Serving's tests compare with: file name -> (model name, version,
# model directory), as tensorflow_model_server_test.py and http_rest_api_handler_test.cc serve them.
METADATA_FILES = {
    "half_plus_two_model_metadata.json": ("default", 123, "saved_model_half_plus_two_cpu"),
    "saved_model_half_plus_two_2_versions_metadata.json":
        ("saved_model_half_plus_two_2_versions", 123, "saved_model_half_plus_two_2_versions"),
}


def models_spec() -> Dict[str, Any]:
    spec = json.loads(SPEC_FILE.read_text())
    return {name: value for name, value in spec.items() if not name.startswith("_")}


def _tensor_text(info) -> str:
    from tensorflow.core.framework import types_pb2

    if not info.HasField("tensor_shape"):
        shape = "no_shape"
    elif info.tensor_shape.unknown_rank:
        shape = "unknown_rank"
    else:
        shape = "[" + ",".join(str(d.size) for d in info.tensor_shape.dim) + "]"
    return f"{info.name} {types_pb2.DataType.Name(info.dtype)} {shape}"


def signatures_of(version_dir) -> Dict[str, Any]:
    """The `serve` MetaGraph's signatures in the table's form, read from saved_model.pb."""
    from tensorflow.core.protobuf import saved_model_pb2
    import tensorflow as tf

    model = saved_model_pb2.SavedModel()
    model.ParseFromString((Path(version_dir) / "saved_model.pb").read_bytes())
    (meta_graph,) = [m for m in model.meta_graphs if "serve" in m.meta_info_def.tags]
    result = {}
    for key, sig in meta_graph.signature_def.items():
        entry = {"method_name": sig.method_name,
                 "inputs": {k: _tensor_text(v) for k, v in sig.inputs.items()},
                 "outputs": {k: _tensor_text(v) for k, v in sig.outputs.items()}}
        if sig.defaults:
            entry["defaults"] = {k: tf.make_ndarray(v).tolist() for k, v in sig.defaults.items()}
        result[key] = entry
    return result


def variables_of(version_dir) -> Dict[str, float]:
    """Checkpointed variable values (scalars) of a SavedModel, without TF2's object graph entry."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(Path(version_dir) / "variables" / "variables"))
    return {name: float(reader.get_tensor(name)) for name in reader.get_variable_to_shape_map()
            if name != "_CHECKPOINTABLE_OBJECT_GRAPH"}


def _tensor_json(text: str) -> Dict[str, Any]:
    name, dtype, shape = text.split(" ")
    out: Dict[str, Any] = {"dtype": dtype}
    if shape == "unknown_rank":
        out["tensor_shape"] = {"dim": [], "unknown_rank": True}
    elif shape != "no_shape":
        dims = json.loads(shape)
        out["tensor_shape"] = {"dim": [{"size": str(d), "name": ""} for d in dims], "unknown_rank": False}
    out["name"] = name
    return out


def metadata_json(model_name: str, version: int, model_dir: str) -> Dict[str, Any]:
    """TF Serving's REST answer to GET /v1/models/<model_name>/metadata for a TF1 model of the table."""
    signatures = {}
    for key, sig in models_spec()[model_dir]["signatures"].items():
        if "defaults" in sig:
            raise ValueError(f"{model_dir}/{key}: rendering signature defaults is not implemented")
        signatures[key] = {"inputs": {k: _tensor_json(v) for k, v in sig["inputs"].items()},
                           "outputs": {k: _tensor_json(v) for k, v in sig["outputs"].items()},
                           "method_name": sig["method_name"], "defaults": {}}
    return {"model_spec": {"name": model_name, "signature_name": "", "version": str(version)},
            "metadata": {"signature_def": {"signature_def": signatures}}}


def write_metadata_files(root) -> None:
    """Write METADATA_FILES under `root` (beside the models, where TF Serving's testdata has them)."""
    for file_name, (model_name, version, model_dir) in METADATA_FILES.items():
        (Path(root) / file_name).write_text(json.dumps(metadata_json(model_name, version, model_dir), indent=1))
