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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional, Tuple

import grpc
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, model_pb2

from serving.core.request_logger import log_request
from serving.servables import handlers
from serving.model_servers import rest_codec
from serving.util.errors import ServingError, http_status, invalid_argument, not_found

log = logging.getLogger("serving")

_PATH = re.compile(r"^/v1/models/(?P<name>[^/:]+)"
                   r"(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
                   r"(?:(?P<metadata>/metadata)|:(?P<verb>[A-Za-z]+))?/?$")
MAX_BODY_BYTES_DEFAULT = 256 * 1024 * 1024


def _model_spec(match) -> model_pb2.ModelSpec:
    spec = model_pb2.ModelSpec(name=match["name"])
    if match["version"] is not None:
        if not match["version"].isdigit():
            raise invalid_argument(f"Failed to convert version: {match['version']} to numeric.")
        spec.version.value = int(match["version"])
    elif match["label"] is not None:
        spec.version_label = match["label"]
    return spec


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: one TCP connection per client, as TF Serving allows
    server_version = "TaxiServing"
    manager = None  # set on the per-server subclass
    max_body_bytes = MAX_BODY_BYTES_DEFAULT

    def log_message(self, fmt, *args):  # keep the console short; access logs at debug level
        log.debug("rest %s - " + fmt, self.address_string(), *args)

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        try:
            status, payload = self._handle(method)
        except ServingError as err:
            status, payload = http_status(err.code), {"error": err.message}
        except Exception as err:  # noqa: BLE001
            log.exception("unexpected REST error")
            status, payload = 500, {"error": f"{type(err).__name__}: {err}"}
        body = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _read_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length > self.max_body_bytes:
            raise ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                               f"request body of {length} bytes exceeds the limit of {self.max_body_bytes}")
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"null")
        except (ValueError, UnicodeDecodeError) as err:
            raise invalid_argument(f"JSON Parse error: {err}") from None
        if not isinstance(body, dict):
            raise invalid_argument("the request body must be a JSON object")
        return body

    def _handle(self, method: str) -> Tuple[int, object]:
        path = self.path.split("?", 1)[0]
        match = _PATH.match(path)
        if method == "POST":
            body = self._read_body()  # always drain the body so the connection stays usable
        if match is None:
            raise not_found(f"Malformed request: {method} {path}")
        spec = _model_spec(match)
        verb = match["verb"]
        if method == "GET" and verb is None:
            if match["metadata"]:
                request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
                request.model_spec.CopyFrom(spec)
                return 200, rest_codec.metadata_json(handlers.get_model_metadata(self.manager, request))
            request = get_model_status_pb2.GetModelStatusRequest()
            request.model_spec.CopyFrom(spec)
            return 200, rest_codec.message_json(handlers.get_model_status(self.manager, request))
        if method != "POST" or verb not in ("predict", "classify", "regress"):
            raise not_found(f"Malformed request: {method} {path}")
        if "signature_name" in body:
            spec.signature_name = str(body["signature_name"])
        if verb == "predict":
            return 200, self._predict(spec, body)
        if verb == "classify":
            return 200, rest_codec.classify_response(
                handlers.classify(self.manager, rest_codec.classify_request(body, spec)))
        return 200, rest_codec.regress_response(handlers.regress(self.manager, rest_codec.regress_request(body, spec)))

    def _predict(self, spec, body):
        # One servable for decoding (the signature's dtypes) and running, so a version swapped in
        # between cannot make the two disagree.
        with self.manager.servable(spec) as servable:
            signature = servable.signature(spec.signature_name)
            request = rest_codec.predict_request(body, spec, signature)
            response = handlers.predict_on(servable, request)
        log_request(self.manager, "predict", request, response)
        return rest_codec.predict_response(response, row_format="instances" in body)


class RestServer:
    """A threaded HTTP server bound to one host/port; `port=0` picks a free one."""

    def __init__(self, manager, host: str, port: int, max_body_bytes: Optional[int] = None):
        handler = type("Handler", (_Handler,), {"manager": manager,
                                                "max_body_bytes": max_body_bytes or MAX_BODY_BYTES_DEFAULT})
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
