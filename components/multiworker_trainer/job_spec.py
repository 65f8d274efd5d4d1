"""What a trainer worker needs to rebuild TFX's FnArgs: the Trainer's artifacts and exec properties.

The executor writes one JSON document (TFX's own artifact JSON, as `tfx/scripts/run_executor.py`
uses) next to the model run outputs; every worker, local process or TFJob pod, reads the same
document from the shared pipeline root. A file rather than command-line arguments keeps worker
command lines short and readable in `ps` and pod specs.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List

from tfx import types
from tfx.dsl.io import fileio
from tfx.types import artifact_utils

SPEC_FILE_NAME = "multiworker_spec.json"
FORMAT_VERSION = 1


def spec_path(model_run_dir: str) -> str:
    """Where the executor puts the spec: inside the Trainer's model_run output (shared by all workers)."""
    return os.path.join(model_run_dir, SPEC_FILE_NAME)


def write_spec(path: str, input_dict: Dict[str, List[types.Artifact]],
               output_dict: Dict[str, List[types.Artifact]], exec_properties: Dict[str, Any]) -> str:
    """Serializes one Trainer execution to `path` (any filesystem TFX's fileio supports)."""
    try:
        properties = json.dumps(exec_properties)
    except TypeError as err:
        raise ValueError(f"trainer exec properties must be JSON-serializable to reach the workers: {err}") from err
    document = {
        "format_version": FORMAT_VERSION,
        "inputs": json.loads(artifact_utils.jsonify_artifact_dict(input_dict)),
        "outputs": json.loads(artifact_utils.jsonify_artifact_dict(output_dict)),
        "exec_properties": json.loads(properties),
    }
    fileio.makedirs(os.path.dirname(path))
    with fileio.open(path, "w") as f:
        f.write(json.dumps(document, indent=1))
    return path


def read_spec(path: str):
    """Returns (input_dict, output_dict, exec_properties) as the executor's Do received them."""
    if not fileio.exists(path):
        raise FileNotFoundError(f"trainer worker spec {path} does not exist; the executor writes it before "
                                "starting workers, so the workers must see the same pipeline root")
    with fileio.open(path, "r") as f:
        document = json.loads(f.read())
    if document.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"trainer worker spec {path} has format {document.get('format_version')!r}, "
                         f"this worker reads format {FORMAT_VERSION}: use the same image/version everywhere")
    inputs = artifact_utils.parse_artifact_dict(json.dumps(document["inputs"]))
    outputs = artifact_utils.parse_artifact_dict(json.dumps(document["outputs"]))
    return inputs, outputs, document["exec_properties"]
