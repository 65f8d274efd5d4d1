"""What the open-source Kubeflow Pipelines backend gives a task, by release: the rules, with their sources.

Every rule here is read from kubeflow/pipelines at the tag named (`git show TAG:path`), file and line
at that tag. Paths are under `backend/src/v2/` unless they say otherwise:
D = driver/driver.go, R = driver/resolve.go, C = metadata/client.go, CV = metadata/converter.go,
L = component/launcher_v2.go, AC = compiler/argocompiler/container.go, OC = objectstore/config.go.

Used by the versioned local backend (`kfp_local.py`) and, on their own, by the tests that build a
task's ExecutorInput the way the driver does (`test_kubeflow_backend_inputs.py`). Pure data and
functions: no I/O.

Not reproduced (a fact of a real cluster only): the Argo workflow, the MLMD server, the launcher's
Kubernetes API reads (the secret is handed over by the harness), retries, the 2.17.0 `--cache_disabled`
server switch, Modelcar `oci://` inputs, workspaces, the 2.17.0 driver-side placeholder resolution
(D:309-319; our steps use `{{$}}` only), proxies and CA bundles.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from typing import Dict, Mapping, Optional, Sequence, Tuple

# L localPathForURI: 2.2.0 L:714-725, 2.5.0 L:882-896, 2.17.0 L:1239-1253.
LOCAL_ROOTS = {"gs://": "/gcs/", "minio://": "/minio/", "s3://": "/s3/"}
LOGS_KEY = "executor-logs"  # 2.5.0 D:2025-2037, 2.17.0 D:755-767
LEGACY_OUTPUT_FILE = "/tmp/kfp_outputs/output_metadata.json"  # 2.2.0 D:1210, 2.5.0 D:2020
OUTPUT_PARAMETERS_DIR = "/tmp/kfp/outputs"  # 2.2.0 D:1226-1230, 2.5.0 D:2054-2058, 2.17.0 D:794-798
DEFAULT_PIPELINE_ROOT = "minio://mlpipeline/v2/artifacts"  # config/env.go 2.2.0:36, 2.5.0:37, 2.17.0:38
MINIO_SECRET = ("mlpipeline-minio-artifact", "accesskey", "secretkey")  # config/env.go 2.2.0:39-42, 2.17.0:41-44


@dataclasses.dataclass(frozen=True)
class Backend:
    """One KFP backend release, as its source says."""

    version: str
    # The launcher's log artifact in every task's outputs: driver flag --publish_logs, default "true"
    # (2.5.0 cmd/driver/main.go:85, 2.17.0 :102); provisioned in D (2.5.0 D:2025-2037, 2.17.0 D:755-767);
    # absent at 2.2.0.
    publish_logs: bool
    # Output URI <run root>/<task>[/<uuid>]/<key>: 2.2.0 D:1218 (no uuid); 2.5.0 D:2046; 2.17.0 D:775-786.
    uuid_in_task_root: bool
    # 2.17.0 appends -<retry index> to the logs URI (L:420, L:558-598): "-0" on a first attempt.
    logs_retry_suffix: bool
    # The executor output file: /tmp/kfp_outputs/output_metadata.json (2.2.0 D:1210, 2.5.0 D:2020), or the
    # local path of the task root + /output_metadata.json (2.17.0 D:800-807).
    output_file_in_task_root: bool
    # RecordArtifact adds store_session_info to every output from 2.5.0 (2.5.0 C:1047-1054, 2.17.0 C:1243-1250).
    session_info_on_artifacts: bool
    # stdout and stderr of the command: separate at 2.2.0 (L:400-403), one stream from 2.5.0 (2.5.0 L:522-523).
    merged_streams: bool
    # emptyDirs mounted in the main container (AC): 2.2.0 only /kfp-launcher (AC:244-249, 271-274);
    # from 2.3.0 also /gcs /s3 /minio /.local /.cache /.config (2.5.0 AC:51-62, 339-382, 407-436;
    # 2.17.0 AC:59-70, 468-511, 536-565).
    empty_dirs: Tuple[str, ...]
    # The default session's MinIO endpoint: minio-service.kubeflow:9000 (2.2.0 OC:31,154-168; 2.5.0 OC:32,
    # 166-180; $MINIO_SERVICE_SERVICE_HOST:PORT when the pod is in kubeflow's namespace), seaweedfs.kubeflow:9000
    # from 2.16.0 (2.17.0 OC:29, config/env.go:182).
    default_minio_endpoint: str

    def run_root(self, pipeline_root: str, pipeline_name: str, run_id: str) -> str:
        """<root>/<pipelineInfo.name>/<run id> (C GenerateOutputURI: 2.2.0 C:278-293,307; 2.17.0 C:391-406,420)."""
        return f"{pipeline_root.rstrip('/')}/{pipeline_name}/{run_id}"

    def task_root(self, run_root: str, task: str, uuid: str) -> str:
        return f"{run_root}/{task}/{uuid}" if self.uuid_in_task_root else f"{run_root}/{task}"

    def output_file(self, task_root: str) -> str:
        return local_path_for_uri(task_root) + "/output_metadata.json" if self.output_file_in_task_root \
            else LEGACY_OUTPUT_FILE


VERSIONS: Dict[str, Backend] = {
    "2.2.0": Backend("2.2.0", publish_logs=False, uuid_in_task_root=False, logs_retry_suffix=False,
                     output_file_in_task_root=False, session_info_on_artifacts=False, merged_streams=False,
                     empty_dirs=("/kfp-launcher",), default_minio_endpoint="minio-service.kubeflow:9000"),
    "2.5.0": Backend("2.5.0", publish_logs=True, uuid_in_task_root=True, logs_retry_suffix=False,
                     output_file_in_task_root=False, session_info_on_artifacts=True, merged_streams=True,
                     empty_dirs=("/kfp-launcher", "/gcs", "/s3", "/minio", "/.local", "/.cache", "/.config"),
                     default_minio_endpoint="minio-service.kubeflow:9000"),
    "2.17.0": Backend("2.17.0", publish_logs=True, uuid_in_task_root=True, logs_retry_suffix=True,
                      output_file_in_task_root=True, session_info_on_artifacts=True, merged_streams=True,
                      empty_dirs=("/kfp-launcher", "/gcs", "/s3", "/minio", "/.local", "/.cache", "/.config"),
                      default_minio_endpoint="seaweedfs.kubeflow:9000"),
}


# The fields protojson.Unmarshal accepts in an executor output file (getExecutorOutputFile rejects any other:
# 2.2.0 L:683-712, 2.17.0 L:1208-1237): api/v2alpha1/pipeline_spec.proto ExecutorOutput (2.5.0 :1011,
# 2.17.0 :1059) and RuntimeArtifact (2.5.0 :912, 2.17.0 :957; `custom_path` new in 2.17.0), by JSON name or
# proto name. 2.2.0 builds with the api module of its go.mod, whose RuntimeArtifact has 2.5.0's fields.
EXECUTOR_OUTPUT_FIELDS = {"parameters", "artifacts", "parameterValues", "parameter_values"}
RUNTIME_ARTIFACT_FIELDS = {"name", "type", "uri", "properties", "customProperties", "custom_properties", "metadata"}


def executor_output_problems(backend: Backend, document: Mapping) -> list:
    """The fields of an executor output file that this release's launcher would refuse to parse."""
    artifact_fields = RUNTIME_ARTIFACT_FIELDS | ({"customPath", "custom_path"} if backend.version == "2.17.0" else set())
    problems = [f"unknown field {k!r}" for k in document if k not in EXECUTOR_OUTPUT_FIELDS]
    for key, artifact_list in (document.get("artifacts") or {}).items():
        problems += [f"artifacts.{key}: unknown field {k!r}" for k in artifact_list if k != "artifacts"]
        for artifact in artifact_list.get("artifacts") or []:
            problems += [f"artifacts.{key}: unknown field {k!r}" for k in artifact if k not in artifact_fields]
    return problems


def local_path_for_uri(uri: str) -> str:
    for scheme, local in LOCAL_ROOTS.items():
        if uri.startswith(scheme):
            return local + uri[len(scheme):]
    raise ValueError(f"failed to generate local path for URI {uri}: unsupported storage scheme")


def prefixed_bucket(root: str) -> str:
    """ParseBucketConfig(root).PrefixedBucket(): OC 2.2.0:101-135 (the regex), 2.17.0 OC:118-137."""
    match = re.match(r"(^[a-z][a-z0-9]+:///?)([^/?]+)(/[^?]*)?(\?.+)?$", root)
    if not match or match.group(1) not in LOCAL_ROOTS:
        raise ValueError(f"parse bucket config failed: unsupported pipeline root {root!r}")
    prefix = (match.group(3) or "").strip("/")
    return match.group(1) + (f"{match.group(2)}/{prefix}" if prefix else match.group(2))


def key_from_uri(prefixed: str, uri: str) -> str:
    """KeyFromURI (OC 2.2.0:84-95, 2.17.0 OC:101-112): the object key under the run root's prefixed bucket."""
    if not uri.startswith(prefixed):
        raise ValueError(f"URI {uri!r} does not have expected bucket prefix {prefixed!r}")
    key = uri[len(prefixed):].lstrip("/")
    if not key:
        raise ValueError(f"URI {uri!r} has empty key given prefixed bucket {prefixed!r}")
    return key


def minio_session(backend: Backend) -> Dict:
    """getDefaultMinioSessionInfo (config/env.go 2.2.0:164-179, 2.17.0:177-193): a minio:// root with no
    `providers` entry in the kfp-launcher ConfigMap. (Before 2.16 a driver in the MinIO Service's own
    namespace takes $MINIO_SERVICE_SERVICE_HOST:PORT instead, 2.2.0 OC:154-168; the harness's pods are not.)"""
    params = {"region": "minio", "endpoint": backend.default_minio_endpoint, "disableSSL": "true", "fromEnv": "false",
              "secretName": MINIO_SECRET[0], "accessKeyKey": MINIO_SECRET[1], "secretKeyKey": MINIO_SECRET[2]}
    if backend.version == "2.17.0":
        params["maxRetries"] = "5"
    return {"Provider": "minio", "Params": params}


def session_info(backend: Backend, pipeline_root: str, providers: Optional[Dict] = None) -> Dict:
    """cfg.GetStoreSessionInfo(root) in the root DAG driver (2.2.0 D:143-163; 2.17.0 root_dag.go:103-123).

    minio://: the `providers.minio` entry when given, else the default session. s3://: with no
    `providers.s3` entry (or a query string) `fromEnv: true`, the pod's AWS environment and AWS's own
    endpoint (config/s3.go 2.2.0:78-87, 2.17.0:90-91); with one, its default merged with the first
    override whose bucket and key prefix match (2.2.0 s3.go:89-156).
    """
    scheme = pipeline_root.split("://", 1)[0]
    provider = (providers or {}).get(scheme if scheme != "gs" else "gs")
    if scheme == "minio" and not provider and "?" not in pipeline_root:
        return minio_session(backend)
    if not provider or "?" in pipeline_root:
        return {"Provider": scheme, "Params": {"fromEnv": "true"}}
    bucket_and_key = pipeline_root.split("://", 1)[1]
    bucket, _, key = bucket_and_key.partition("/")
    chosen = dict(provider.get("default") or {})
    for override in provider.get("overrides") or []:
        if override.get("bucketName") == bucket and key.startswith(override.get("keyPrefix", "")):
            chosen.update({k: v for k, v in override.items() if k not in ("bucketName", "keyPrefix")})
            break
    credentials = chosen.get("credentials") or {}
    secret = credentials.get("secretRef") or {}
    params = {"endpoint": chosen.get("endpoint", ""), "region": chosen.get("region", ""),
              "disableSSL": str(bool(chosen.get("disableSSL", False))).lower(),
              "fromEnv": str(bool(credentials.get("fromEnv", False))).lower(),
              "secretName": secret.get("secretName", ""), "accessKeyKey": secret.get("accessKeyKey", ""),
              "secretKeyKey": secret.get("secretKeyKey", "")}
    return {"Provider": scheme, "Params": params}


def provision_outputs(backend: Backend, task_root: str, output_definitions: Mapping) -> Dict:
    """ExecutorInput.outputs as the driver writes it (provisionOutputs: 2.2.0 D:1206-1232, 2.5.0 D:2010-2061,
    2.17.0 D:741-810): one artifact per output key at <task root>/<key> with the compiled type, the
    launcher's `executor-logs` from 2.5.0, parameter files under /tmp/kfp/outputs, the output file."""
    artifacts = {}
    for key, spec in (output_definitions.get("artifacts") or {}).items():
        artifact = {"uri": f"{task_root}/{key}", "type": spec["artifactType"]}
        if backend.version == "2.17.0":
            artifact["name"] = key  # D:783; empty before
        if spec.get("metadata"):
            artifact["metadata"] = spec["metadata"]
        artifacts[key] = {"artifacts": [artifact]}
    if backend.publish_logs:
        uri = f"{task_root}/{LOGS_KEY}" + ("-0" if backend.logs_retry_suffix else "")
        logs = {"uri": uri, "type": {"schemaTitle": "system.Artifact"}}
        if backend.version == "2.17.0":
            logs["name"] = LOGS_KEY
        artifacts[LOGS_KEY] = {"artifacts": [logs]}
    parameters = {key: {"outputFile": f"{OUTPUT_PARAMETERS_DIR}/{key}"}
                  for key in (output_definitions.get("parameters") or {})}
    return {"artifacts": artifacts, "parameters": parameters, "outputFile": backend.output_file(task_root)}


def _to_mlmd(value):
    """StructValueToMLMDValue (CV 2.2.0:133-166, 2.17.0 CV:138-171): bool -> int, number -> double,
    list -> {"list": ...}, struct -> {"struct": ...}, null refused."""
    if value is None:
        raise ValueError("failed to convert null to MLMD value (TODO: support null)")
    if isinstance(value, bool):
        return ("int", int(value))
    if isinstance(value, (int, float)):
        return ("double", float(value))
    if isinstance(value, str):
        return ("string", value)
    if isinstance(value, list):
        return ("struct", {"list": value})
    return ("struct", {"struct": value})


def record_artifact(backend: Backend, key: str, artifact: Mapping, session: Mapping) -> Dict:
    """What RecordArtifact stores in ML Metadata for one output (2.2.0 C:892-939, 2.5.0 C:1018-1078,
    2.17.0 C:1214-1274): the URI, the metadata as custom properties, `display_name`, `store_session_info`
    from 2.5.0, and the schema: an instanceSchema as is, a schemaTitle as "title: <title>"
    (getArtifactSchema, 2.2.0 L:654-665); the MLMD type is named after the schema's title, and with no
    title the launcher exits (SchemaToArtifactType, 2.2.0 C:877-889)."""
    kind = artifact.get("type") or {}
    schema = kind.get("instanceSchema") or (f"title: {kind['schemaTitle']}" if kind.get("schemaTitle") else "")
    title = re.search(r"^title:\s*(\S+)", schema, re.M)
    if not title:
        raise ValueError(f"output {key!r}: No title specified")
    properties = {name: _to_mlmd(value) for name, value in (artifact.get("metadata") or {}).items()}
    properties.setdefault("display_name", ("string", key))
    if backend.session_info_on_artifacts:
        properties["store_session_info"] = ("string", json.dumps(session, separators=(",", ":")))
    return {"uri": artifact["uri"], "type_name": title.group(1), "custom_properties": properties}


def runtime_artifact_from_mlmd(artifact_id: int, record: Mapping) -> Dict:
    """The RuntimeArtifact a downstream driver puts in inputs.artifacts (all three tags):
    GetOutputArtifactsByExecutionId sets Schema "" (2.2.0 C:822, 2.5.0 C:948, 2.17.0 C:1144) and
    ToRuntimeArtifact writes it as the instanceSchema (2.2.0 C:177-178, 2.17.0 C:256-257); name is the
    MLMD id (CV 2.2.0:182, 2.17.0 CV:187); metadata from the custom properties (CV 2.2.0:176-216):
    string -> string, int and double -> number, struct -> its JSON value."""
    metadata = {}
    for name, (kind, value) in record["custom_properties"].items():
        metadata[name] = float(value) if kind in ("int", "double") else value
    return {"name": str(artifact_id), "uri": record["uri"], "type": {"instanceSchema": ""}, "metadata": metadata}


def resolve_parameters(task_inputs: Mapping, definitions: Mapping,
                       upstream: Mapping[str, Mapping[str, object]] = {}) -> Dict:
    """Input parameters as the driver resolves them: an upstream task's output parameter
    (`taskOutputParameter`, 2.2.0 D:1094-1133; 2.5.0 D:1590-1667; 2.17.0 R:375-497), else only
    `runtimeValue.constant` (2.2.0 D:1138-1139), checked against the component's parameterType (2.2.0
    D:954-1033, 2.17.0 R:169-256): STRING takes any value as text, other types need the same JSON kind.
    `upstream`: task -> its output parameters. Raises ValueError with the driver's wording."""
    values = {}
    for name, spec in (task_inputs.get("parameters") or {}).items():
        output = spec.get("taskOutputParameter")
        if output:
            produced = upstream.get(output["producerTask"], {})
            if output["outputParameterKey"] not in produced:
                raise ValueError(f"cannot find output parameter key {output['outputParameterKey']!r} in producer "
                                 f"task {output['producerTask']!r}")
            values[name] = produced[output["outputParameterKey"]]
            continue
        runtime = spec.get("runtimeValue")
        if runtime is None or "constant" not in runtime:
            kind = next(iter(runtime), "?") if runtime else next(iter(spec), "?")
            raise ValueError(f"input parameter {name!r}: parameter spec of type {kind} not implemented")
        values[name] = runtime["constant"]
    for name, definition in definitions.items():
        if name not in values:
            if not definition.get("isOptional") and "defaultValue" not in definition:
                raise ValueError(f"neither value nor default value provided for non-optional parameter {name!r}")
            continue
        kind, value = definition.get("parameterType"), values[name]
        if kind == "STRING":
            if not isinstance(value, str):
                values[name] = pb_value_to_text(value)
        elif isinstance(value, str) or (isinstance(value, bool) and kind != "BOOLEAN") or (
                isinstance(value, (int, float)) and not isinstance(value, bool)
                and kind not in ("NUMBER_INTEGER", "NUMBER_DOUBLE")):
            raise ValueError(f"input parameter {name!r} type mismatch: expect {kind}, got {type(value).__name__}")
    return values


def pb_value_to_text(value) -> str:
    """metadata.PbValueToText (CV:15-48): numbers with FormatFloat 'f' -1, bools, JSON for lists and structs."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(float(value)).rstrip("0").rstrip(".") if isinstance(value, float) else str(value)
    return json.dumps(value)


def add_default_params(executor_input: Dict, definitions: Mapping) -> Dict:
    """launcher addDefaultParams (2.2.0 L:755-776): parameters the driver left out get their defaults."""
    document = json.loads(json.dumps(executor_input))
    values = document["inputs"].setdefault("parameterValues", {})
    for name, definition in definitions.items():
        if "defaultValue" in definition and name not in values:
            values[name] = definition["defaultValue"]
    return document


def cache_fingerprint(backend: Backend, input_artifact_names: Mapping[str, Sequence[str]], parameters: Mapping,
                      output_definitions: Mapping, image: str, cmd_args: Sequence[str],
                      pvc_names: Sequence[str] = ()) -> str:
    """The cache key's fingerprint (cacheutils/cache.go GenerateCacheKey: 2.2.0 :51-106, 2.5.0 :52-107,
    2.17.0 :151-229): input artifacts by MLMD id (not URI), input parameter values, the outputs' names and
    types, the image and the command with its args unresolved; 2.17.0 adds the mounted PVCs' names. The
    data a task reads from a volume is not in it. (A SHA-256 over an equivalent JSON, not the protojson
    bytes: what matters here is which inputs change it.)"""
    key = {"inputArtifactNames": {k: list(v) for k, v in sorted(input_artifact_names.items())},
           "inputParameterValues": dict(sorted(parameters.items())),
           "outputArtifactsSpec": {k: v.get("artifactType") for k, v in
                                   sorted((output_definitions.get("artifacts") or {}).items())},
           "outputParametersSpec": {k: v.get("parameterType") for k, v in
                                    sorted((output_definitions.get("parameters") or {}).items())},
           "containerSpec": {"image": image, "cmdArgs": list(cmd_args)}}
    if backend.version == "2.17.0":
        key["pvcNames"] = sorted(set(pvc_names))
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def pod_environment(backend: Backend, pod_name: str, pod_uid: str, container_env: Sequence[Mapping] = (),
                    secret_env: Mapping[str, str] = {}) -> Dict[str, str]:
    """The main container's environment, all of it: KFP_POD_NAME / KFP_POD_UID (argocompiler/common.go
    2.2.0:30-44, 2.17.0:42-56), METADATA_GRPC_SERVICE_HOST/PORT from the optional metadata-grpc-configmap
    (2.2.0 common.go:19-28), the component's own `env` (2.2.0 D:380-384, 2.17.0 D:289-293) and the
    platform spec's secretAsEnv (2.2.0 D:553-567, 2.17.0 k8s.go:346-393). KFP sets no AWS_ENDPOINT_URL,
    S3_ENDPOINT, NAMESPACE or credentials of its own at any tag."""
    env = {"KFP_POD_NAME": pod_name, "KFP_POD_UID": pod_uid,
           "METADATA_GRPC_SERVICE_HOST": "metadata-grpc-service.kubeflow", "METADATA_GRPC_SERVICE_PORT": "8080"}
    env.update({item["name"]: item.get("value", "") for item in container_env})
    env.update(secret_env)
    return env
