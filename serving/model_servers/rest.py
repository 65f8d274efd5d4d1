"""REST front end on TF Serving's paths: `/v1/models/{name}[/versions/{v}|/labels/{l}]`.

GET gives the model status, GET `.../metadata` the signature metadata, POST `:predict`,
`:classify`, `:regress` run the model. Errors come back as TF Serving does: an HTTP status mapped
from the gRPC code and a body `{"error": "<message>"}`.
"""
from __future__ import annotations

import json
import logging
import re
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional, Tuple

import grpc
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, model_pb2

from serving.core.request_logger import log_request
from serving.servables import handlers
from serving.model_servers import json_iterative, rest_codec
from serving.servables.servable import DEFAULT_SIGNATURE
from serving.util import metrics as metrics_lib
from serving.util.errors import (ServingError, failed_precondition, http_status, internal_error, invalid_argument,
                                 not_found)

log = logging.getLogger("serving")

# http_rest_api_util.cc: the paths TF Serving's REST handler takes (case-insensitive, as there).
_REST_PREFIX = re.compile(r"(?i)/v1/.*")
_PREDICTION_PATH = re.compile(
    r"(?i)/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)")
_STATUS_PATH = re.compile(
    r"(?i)/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:\/(metadata))?")
MAX_BODY_BYTES_DEFAULT = 256 * 1024 * 1024
_INT64_MAX = 2 ** 63 - 1


def _model_spec(name: str, version: Optional[str], label: Optional[str]) -> model_pb2.ModelSpec:
    """ParseModelInfo + FillModelSpecWithNameVersionAndLabel: URL-decoded name and label."""
    spec = model_pb2.ModelSpec(name=urllib.parse.unquote(name or ""))
    if version:
        if int(version) > _INT64_MAX:
            raise invalid_argument(f"Failed to convert version: {version} to numeric.")
        spec.version.value = int(version)
    if label:
        spec.version_label = urllib.parse.unquote(label)
    return spec


# Python's json messages -> rapidjson's GetParseError_En words, which TF Serving returns.
_RAPIDJSON_WORDS = (
    ("Expecting property name enclosed in double quotes", "Missing a name for object member."),
    ("Expecting ':' delimiter", "Missing a colon after a name of object member."),
    ("Unterminated string", "Missing a closing quotation mark in string."),
    ("Invalid \\escape", "Invalid escape character in string."),
    ("Invalid \\uXXXX escape", "Incorrect hex digit after \\u escape in string."),
    ("Invalid control character", "Invalid encoding in string."),
)


def _parse_json(raw: bytes):
    """json_tensor.cc ParseJson: one JSON object (rapidjson with kParseStopWhenDoneFlag: whatever
    follows the first value is ignored), NaN and Infinity allowed; rapidjson's error words. Nested
    past Python's recursion limit, the body is parsed again without recursion (json_iterative), as
    rapidjson's kParseIterativeFlag parses any depth."""
    if not raw:
        raise invalid_argument("JSON Parse error: The document is empty")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise invalid_argument(f"JSON Parse error: Invalid encoding in string. at offset: {err.start}") from None
    start = len(text) - len(text.lstrip(" \t\n\r"))
    if start == len(text):
        raise invalid_argument("JSON Parse error: The document is empty")
    try:
        try:
            body, _ = json.JSONDecoder().raw_decode(text, start)
        except RecursionError:
            body, _ = json_iterative.raw_decode(text, start)
    except json.JSONDecodeError as err:
        words = next((w for prefix, w in _RAPIDJSON_WORDS if err.msg.startswith(prefix)), None)
        if words is None and err.msg.startswith("Expecting ',' delimiter"):
            words = ("Missing a comma or '}' after an object member." if _inside_object(text, err.pos)
                     else "Missing a comma or ']' after an array element.")
        raise invalid_argument(f"JSON Parse error: {words or 'Invalid value.'} at offset: {err.pos}") from None
    if not isinstance(body, dict):
        raise invalid_argument(f"JSON Value: {rest_codec._debug(body)} Is not object")
    if "signature_name" in body and not isinstance(body["signature_name"], str):
        raise invalid_argument(f"JSON Value: {rest_codec._debug(body)} not formatted correctly. 'signature_name' "
                               "key must be a string value.")
    return body


def _inside_object(text: str, pos: int) -> bool:
    """Is `pos` directly inside an object (not an array)? Brackets outside strings, counted back."""
    stack, in_string, escaped = [], False, False
    for ch in text[:pos]:
        if in_string:
            escaped, in_string = (not escaped and ch == "\\"), in_string and not (ch == '"' and not escaped)
            continue
        if ch == '"':
            in_string = True
        elif ch in "[{":
            stack.append(ch)
        elif ch in "]}" and stack:
            stack.pop()
    return bool(stack) and stack[-1] == "{"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: one TCP connection per client, as TF Serving allows
    server_version = "TaxiServing"
    manager = None  # set on the per-server subclass
    max_body_bytes = MAX_BODY_BYTES_DEFAULT
    metrics = None  # serving.util.metrics.ServingMetrics when monitoring is on
    metrics_path = None  # MonitoringConfig prometheus_config.path

    def log_message(self, fmt, *args):  # keep the console short; access logs at debug level
        log.debug("rest %s - " + fmt, self.address_string(), *args)

    def do_GET(self):
        if self.metrics_path is not None and self.path.split("?", 1)[0] == self.metrics_path:
            self._send(200, self.metrics.render().encode("utf-8"), "text/plain")  # as TF Serving's exporter
            return
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):  # TF Serving answers any other method with "Malformed request"
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def do_OPTIONS(self):
        self._dispatch("OPTIONS")

    def _dispatch(self, method: str) -> None:
        started = time.perf_counter()
        code = "OK"
        token = None
        self._spec = None  # one handler serves every request of a keep-alive connection
        name = verb = ""
        if self.metrics is not None:
            path = self.path.split("?", 1)[0]
            match = _PREDICTION_PATH.fullmatch(path) if method == "POST" else _STATUS_PATH.fullmatch(path)
            if match is not None:
                name = urllib.parse.unquote(match.group(1) or "")
                verb = (match.group(4) or "") if method == "POST" else ""
            token = metrics_lib.current_api.set({"classify": "Classify", "regress": "Regress"}.get(verb, "Predict"))
        try:
            status, payload = self._handle(method)
        except ServingError as err:
            status, payload, code = http_status(err.code), {"error": err.message}, err.code.name
        except Exception as err:  # noqa: BLE001 - our failure: trace to the log, no Python text out
            error = internal_error(err, f"REST {method} {self.path}")
            status, payload, code = http_status(error.code), {"error": error.message}, error.code.name
        if self.metrics is not None:
            metrics_lib.current_api.reset(token)
            if self.path.startswith("/v1/"):  # TF Serving's REST dispatcher: model name and verb from the path
                signature = ((self._spec.signature_name if self._spec is not None else "") or DEFAULT_SIGNATURE) if verb else ""
                self.metrics.record_request(name, verb, signature, "REST", code, started)
        body = b"" if payload is None else json.dumps(payload).encode("utf-8")
        self._send(status, body, "application/json")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _read_raw_body(self) -> bytes:
        """The whole body, by Content-Length or chunked, as net_http hands TF Serving's handler."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked()
        text = (self.headers.get("Content-Length") or "0").strip()
        if not text.isdigit():
            self.close_connection = True  # the body's end is unknown: this connection cannot be reused
            raise invalid_argument(f"Malformed request: bad Content-Length {text[:20]!r}")
        length = int(text)
        self._check_size(length)
        return self.rfile.read(length) if length else b""

    def _check_size(self, length: int) -> None:
        if length > self.max_body_bytes:
            self.close_connection = True
            raise ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                               f"request body of {length} bytes exceeds the limit of {self.max_body_bytes}")

    def _read_chunked(self) -> bytes:
        parts, total = [], 0
        while True:
            line = self.rfile.readline(1024).split(b";", 1)[0].strip()
            try:
                size = int(line, 16)
            except ValueError:
                self.close_connection = True
                raise invalid_argument("Malformed request: bad chunked encoding") from None
            if size == 0:
                while self.rfile.readline(1024).strip():  # trailers
                    pass
                return b"".join(parts)
            total += size
            self._check_size(total)
            parts.append(self.rfile.read(size))
            self.rfile.readline(1024)  # the CRLF after the chunk

    def _handle(self, method: str) -> Tuple[int, object]:
        """http_rest_api_handler.cc ProcessRequest: paths under /v1/ that match no API are
        INVALID_ARGUMENT "Malformed request" (400); others have no handler (404)."""
        path = self.path.split("?", 1)[0]
        raw = self._read_raw_body()  # always drain the body so the connection stays usable
        if not _REST_PREFIX.fullmatch(path):
            raise not_found(f"Malformed request: {method} {path}")
        if method == "OPTIONS":  # http_server.cc: a CORS preflight needs an http(s) Origin
            if re.search(r"https?://", self.headers.get("Origin") or ""):
                return 200, None
            raise failed_precondition("Origin header is missing in CORS preflight")
        malformed = invalid_argument(f"Malformed request: {method} {path}")
        if method == "POST":
            match = _PREDICTION_PATH.fullmatch(path)
            if match is None:
                raise malformed
            name, version, label, verb = match.groups()
            spec = self._spec = _model_spec(name, version, label)
            if verb == "predict":
                return 200, self._predict(spec, raw)
            if verb == "classify":
                body = _parse_json(raw)
                spec.signature_name = body.get("signature_name", "")
                return 200, rest_codec.classify_response(
                    handlers.classify(self.manager, rest_codec.classify_request(body, spec)))
            if verb == "regress":
                body = _parse_json(raw)
                spec.signature_name = body.get("signature_name", "")
                return 200, rest_codec.regress_response(
                    handlers.regress(self.manager, rest_codec.regress_request(body, spec)))
            raise malformed  # e.g. ":PREDICT": the path matches case-insensitively, the verb does not
        match = _STATUS_PATH.fullmatch(path)
        if method != "GET" or match is None:
            raise malformed
        name, version, label, subresource = match.groups()
        if not name:
            raise invalid_argument("Missing model name in request.")
        spec = _model_spec(name, version, label)
        if subresource == "metadata":
            request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
            request.model_spec.CopyFrom(spec)
            return 200, rest_codec.metadata_json(handlers.get_model_metadata(self.manager, request))
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.CopyFrom(spec)
        return 200, rest_codec.message_json(handlers.get_model_status(self.manager, request))

    def _predict(self, spec, raw: bytes):
        """ProcessPredictRequest: JSON, signature name, the signature's inputs (unknown signature:
        INVALID_ARGUMENT here, before Predict), tensors, then Predict. One servable for decoding
        and running, so a version swapped in between cannot make the two disagree."""
        body = _parse_json(raw)
        spec.signature_name = body.get("signature_name", "")
        with self.manager.servable(spec) as servable:
            key = spec.signature_name or handlers.DEFAULT_SIGNATURE
            signature = servable.find_signature(key)
            if signature is None:
                raise invalid_argument(f'Serving signature name: "{key}" not found in signature def')
            request, row_format = rest_codec.predict_request(body, spec, signature)
            response = handlers.predict_on(servable, request, handlers.signature_method_check(self.manager))
        log_request(self.manager, "predict", request, response)
        return rest_codec.predict_response(response, row_format)


class RestServer:
    """A threaded HTTP server bound to one host/port; `port=0` picks a free one."""

    def __init__(self, manager, host: str, port: int, max_body_bytes: Optional[int] = None, metrics=None,
                 metrics_path: Optional[str] = None):
        handler = type("Handler", (_Handler,), {"manager": manager,
                                                "max_body_bytes": max_body_bytes or MAX_BODY_BYTES_DEFAULT,
                                                "metrics": metrics,
                                                "metrics_path": metrics_path if metrics is not None else None})
        self._httpd = ThreadingHTTPServer((host, port), handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="rest", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
