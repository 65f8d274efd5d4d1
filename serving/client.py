"""A gRPC client on the official `tensorflow-serving-api` stubs, for the stand-in and real TF Serving.

Also turns tabular rows (CSV/JSON dicts of strings or numbers) into what a model's signatures take:
serialized `tf.Example`s for a signature with one string input (typed with the model's own
`serving_raw` dtypes when it has one), or one tensor per column for a raw-feature signature.
"""
from __future__ import annotations

import time
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import grpc
import numpy as np
from tensorflow.core.example import example_pb2
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_service_pb2_grpc,
                                     predict_pb2, prediction_service_pb2_grpc)

from serving.util import tensors

RAW_SIGNATURE = "serving_raw"
AVAILABLE = get_model_status_pb2.ModelVersionStatus.State.AVAILABLE


class ServingClient:
    def __init__(self, target: str, timeout_s: float = 10.0, credentials: Optional[grpc.ChannelCredentials] = None,
                 max_message_bytes: int = 2**31 - 1):
        options = [("grpc.max_receive_message_length", max_message_bytes),
                   ("grpc.max_send_message_length", max_message_bytes)]
        self.channel = (grpc.secure_channel(target, credentials, options) if credentials is not None
                        else grpc.insecure_channel(target, options))
        self.prediction = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)
        self.timeout_s = timeout_s

    def close(self) -> None:
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def predict(self, model: str, inputs: Mapping[str, np.ndarray], signature: str = "",
                version: Optional[int] = None, output_filter: Sequence[str] = ()
                ) -> Tuple[Dict[str, np.ndarray], predict_pb2.PredictResponse]:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model
        request.model_spec.signature_name = signature
        if version is not None:
            request.model_spec.version.value = version
        for alias, value in inputs.items():
            tensors.from_ndarray(np.asarray(value) if not isinstance(value, np.ndarray) else value,
                                 request.inputs[alias])
        request.output_filter.extend(output_filter)
        response = self.prediction.Predict(request, timeout=self.timeout_s)
        return {k: tensors.to_ndarray(v) for k, v in response.outputs.items()}, response

    def signature_defs(self, model: str, version: Optional[int] = None):
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.name = model
        if version is not None:
            request.model_spec.version.value = version
        response = self.prediction.GetModelMetadata(request, timeout=self.timeout_s)
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(sig_map)
        return sig_map.signature_def

    def status(self, model: str):
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = model
        return list(self.models.GetModelStatus(request, timeout=self.timeout_s).model_version_status)

    def wait_until_available(self, model: str, timeout_s: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if any(s.state == AVAILABLE for s in self.status(model)):
                    return True
            except grpc.RpcError as err:
                if err.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE):
                    raise
            time.sleep(0.1)
        return False


def _typed(value, dtype: Optional[int], column: str):
    """One CSV/JSON cell as the feature type; None for a missing value."""
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    if dtype == types_pb2.DT_STRING:
        return value if isinstance(value, bytes) else str(value).encode("utf-8")
    if dtype in (types_pb2.DT_INT64, types_pb2.DT_INT32):
        try:
            return int(value) if not isinstance(value, str) else int(float(value)) if "." in value else int(value)
        except ValueError:
            raise ValueError(f"column {column!r}: {value!r} is not an integer") from None
    if dtype in (types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE):
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"column {column!r}: {value!r} is not a number") from None
    # Unknown type (no raw signature): guess int, then float, then string.
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    for cast in (int, float):
        try:
            return cast(value)
        except (TypeError, ValueError):
            pass
    return str(value).encode("utf-8")


def row_to_example(row: Mapping[str, object], dtypes: Optional[Mapping[str, int]] = None) -> example_pb2.Example:
    """A CSV/JSON row as a tf.Example; with `dtypes`, only those columns, typed as the model expects."""
    example = example_pb2.Example()
    columns = dtypes.keys() if dtypes else row.keys()
    for column in columns:
        value = _typed(row.get(column), dtypes.get(column) if dtypes else None, column)
        if value is None:
            continue  # missing, as CsvExampleGen leaves an empty cell
        feature = example.features.feature[column]
        if isinstance(value, bytes):
            feature.bytes_list.value.append(value)
        elif isinstance(value, int):
            feature.int64_list.value.append(value)
        else:
            feature.float_list.value.append(value)
    return example


def raw_input_dtypes(signature_defs) -> Optional[Dict[str, int]]:
    """Feature name -> dtype from the model's raw-feature signature, if it has one."""
    sig = signature_defs.get(RAW_SIGNATURE) if signature_defs is not None else None
    return {alias: info.dtype for alias, info in sig.inputs.items()} if sig is not None else None


def rows_to_inputs(rows: List[Mapping[str, object]], signature_def, raw_dtypes: Optional[Mapping[str, int]]
                   ) -> Dict[str, np.ndarray]:
    """What `signature_def` takes for these rows: serialized examples, or one typed column per input."""
    inputs = signature_def.inputs
    if len(inputs) == 1:
        (alias, info), = inputs.items()
        if info.dtype == types_pb2.DT_STRING and not (raw_dtypes and alias in raw_dtypes):
            serialized = np.empty(len(rows), dtype=object)
            serialized[:] = [row_to_example(r, raw_dtypes).SerializeToString() for r in rows]
            return {alias: serialized}
    columns = {}
    for alias, info in inputs.items():
        values = []
        for i, row in enumerate(rows):
            value = _typed(row.get(alias), info.dtype, alias)
            if value is None:
                raise ValueError(f"row {i + 1} has no value for input {alias!r}; the {alias!r} signature needs "
                                 "every column (use the tf.Example signature for rows with gaps)")
            values.append(value)
        np_type = tensors.numpy_dtype(info.dtype)
        if np_type is object:
            array = np.empty(len(values), dtype=object)
            array[:] = values
        else:
            array = np.array(values, dtype=np_type)
        columns[alias] = array
    return columns
