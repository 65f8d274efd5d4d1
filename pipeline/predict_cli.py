"""`taxi-pipeline predict`: send rows from a CSV or JSON file to a model server over gRPC.

Works against the stand-in and real TF Serving alike (it only uses `tensorflow-serving-api`).
Prints one line per row with the model's outputs, and the true label beside them when the rows
carry what the label is computed from (`trainer_module.features.label_from_row`).
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Callable, List, Mapping, Optional

import numpy as np

DEFAULT_SERVER = "127.0.0.1:8500"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("rows", type=Path, help="CSV with a header row, or JSON (a list of objects, "
                        '{"instances": [...]}, or one object per line)')
    parser.add_argument("--server", default=DEFAULT_SERVER, help="gRPC host:port (default: %(default)s)")
    parser.add_argument("--model", "--model_name", "--model-name", dest="model", default="taxi",
                        help="model name (default: %(default)s)")
    parser.add_argument("--signature", default="serving_default", help="signature (default: %(default)s)")
    parser.add_argument("--version", type=int, default=None, help="model version (default: the latest)")
    parser.add_argument("--limit", type=int, default=10, help="send at most this many rows (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per RPC (default: %(default)s)")
    parser.add_argument("--tflite", type=Path, default=None, metavar="MODEL",
                        help="run a TF Lite model locally instead of asking a server (a .tflite file, or the "
                             "Trainer's tflite/ folder: its quantized model)")


def read_rows(path: Path) -> List[Mapping[str, object]]:
    """Rows as dicts; ValueError with a readable line when the file is not rows."""
    text = path.read_text()
    if path.suffix.lower() in (".json", ".jsonl", ".ndjson") or text.lstrip()[:1] in ("[", "{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            try:
                data = [json.loads(line) for line in text.splitlines() if line.strip()]
            except json.JSONDecodeError as err:
                raise ValueError(f"{path} is neither JSON nor JSON lines: {err}") from None
        if isinstance(data, dict):
            data = data.get("instances", [data])
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise ValueError(f"{path}: expected a list of objects (feature name -> value)")
        return data
    rows = list(csv.DictReader(text.splitlines()))
    if not rows:
        raise ValueError(f"{path} has no data rows (a CSV needs a header row and at least one row)")
    return rows


def _label_fn() -> Optional[Callable]:
    try:
        from trainer_module.features import label_from_row
    except ImportError:
        return None
    return label_from_row


def _cell(value: np.ndarray) -> str:
    flat = np.asarray(value).reshape(-1)
    parts = [v.decode("utf-8", "replace") if isinstance(v, bytes) else f"{v:.4f}" if isinstance(v, float)
             else str(v) for v in flat.tolist()]
    return parts[0] if len(parts) == 1 else "[" + " ".join(parts) + "]"


def format_table(rows, outputs, labels) -> str:
    names = sorted(outputs)
    header = ["row"] + (["label"] if labels is not None else []) + names
    lines = []
    for i in range(len(rows)):
        line = [str(i + 1)]
        if labels is not None:
            line.append("-" if labels[i] is None else str(labels[i]))
        line += [_cell(outputs[name][i]) for name in names]
        lines.append(line)
    widths = [max(len(h), *(len(l[c]) for l in lines)) for c, h in enumerate(header)]
    fmt = "  ".join(f"{{:>{w}}}" for w in widths)
    return "\n".join([fmt.format(*header)] + [fmt.format(*l) for l in lines])


def predict_rows(client, model, signature, rows, version=None):
    """(outputs, response) for the rows, encoded as the signature takes them."""
    from serving import client as client_lib

    defs = client.signature_defs(model, version)
    key = signature or "serving_default"
    if key not in defs:
        raise KeyError(f"model {model!r} has no signature {key!r}; it has {', '.join(sorted(defs))}")
    inputs = client_lib.rows_to_inputs(rows, defs[key], client_lib.raw_input_dtypes(defs))
    return client.predict(model, inputs, signature=key, version=version)


def tflite_path(path: Path) -> Path:
    """The .tflite file `--tflite` names: a file, or the quantized model in a Trainer's tflite/ folder."""
    from trainer_module import tflite_export

    if path.is_dir():
        for name in (tflite_export.DYNAMIC_FILE, tflite_export.FLOAT_FILE):
            if (path / name).exists():
                return path / name
        raise FileNotFoundError(f"{path} holds no {tflite_export.DYNAMIC_FILE} or {tflite_export.FLOAT_FILE}")
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    return path


def predict_tflite(path: Path, rows) -> np.ndarray:
    """Probabilities of the rows from a TF Lite model run with TensorFlow's interpreter."""
    from trainer_module import tflite_export

    model = tflite_export.TFLiteModel(str(path))
    return model.predict(tflite_export.rows_to_columns(rows, model.input_dtypes))


def _labels(rows):
    label_fn = _label_fn()
    labels = [label_fn(r) for r in rows] if label_fn else None
    if labels is not None and all(l is None for l in labels):
        labels = None
    return labels


def main_tflite(args, rows) -> int:
    from pipeline.errors import UserError
    from trainer_module.tflite_export import OUTPUT_KEY, TFLiteExportError

    try:
        path = tflite_path(args.tflite)
        probabilities = predict_tflite(path, rows)
    except FileNotFoundError as err:
        raise UserError(f"--tflite: {err}") from None
    except (TFLiteExportError, ValueError) as err:
        raise UserError(str(err)) from None
    print(f"TF Lite model {path} (TensorFlow's interpreter), signature serving_raw, {len(rows)} rows")
    print(format_table(rows, {OUTPUT_KEY: probabilities.reshape(-1, 1)}, _labels(rows)))
    return 0


def main(args) -> int:
    from pipeline.errors import UserError

    if args.limit < 1:
        raise UserError(f"--limit must be at least 1, not {args.limit}")
    try:
        rows = read_rows(args.rows)[: args.limit]
    except OSError as err:
        raise UserError(f"cannot read {args.rows}: {err.strerror}") from None
    except ValueError as err:
        raise UserError(str(err)) from None
    if args.tflite is not None:
        return main_tflite(args, rows)

    import grpc

    from serving.client import ServingClient
    with ServingClient(args.server, timeout_s=args.timeout) as client:
        try:
            outputs, response = predict_rows(client, args.model, args.signature, rows, args.version)
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.UNAVAILABLE:
                raise UserError(f"no model server answers at {args.server}; start one with `taxi-pipeline serve`"
                                ) from None
            raise UserError(f"server refused the request ({err.code().name}): {err.details()}") from None
        except (KeyError, ValueError) as err:
            raise UserError(str(err).strip('"')) from None
    labels = _labels(rows)
    spec = response.model_spec
    print(f"model {spec.name} version {spec.version.value}, signature {spec.signature_name}, {len(rows)} rows")
    print(format_table(rows, outputs, labels))
    return 0
