"""The KFP launcher's work inside a task's pod: a stand-in for `/kfp-launcher/launch` (launcher_v2.go).

`kfp_local.py` copies this file and `kfp_backend.py` into the pod's `/kfp-launcher` emptyDir (where
KFP's init container copies its launcher binary: argocompiler/container.go 2.2.0:250-261) and runs
`python /kfp-launcher/kfp_launcher.py /kfp-launcher/task.json -- COMMAND...` in the step's image, as
the image's user, as the real launcher runs: in the main container, before and after the command.
What it does, in the launcher's order (L = backend/src/v2/component/launcher_v2.go at the task's tag):

1. prepareOutputFolders: the parent folder of every output's local path (2.2.0 L:727-, 2.17.0
   L:1280-1304), created as the pod's user: on 2.2.0, with no emptyDir at /s3, /minio, /gcs, this is
   where an image without those folders writable fails;
2. downloadArtifacts: every input artifact's objects to its local path, whatever the command reads
   (2.2.0 L:471-526 "TODO: only download when .path is used", 2.5.0 L:619-688; 2.17.0 L:927-1004 every
   element of a list, the others the first); an empty prefix downloads nothing, without error;
3. the command, its output to the launcher's stdout; from 2.5.0 stdout and stderr in one stream that
   is also written to the `executor-logs` artifact (getLogWriter, 2.5.0 L:467-488, 2.17.0 L:632-653);
4. on success: the executor output file (missing = empty, getExecutorOutputFile 2.2.0 L:683-712),
   merged into the provisioned outputs (uri and metadata; 2.17.0 leaves `executor-logs` alone, L:804;
   mergeRuntimeArtifacts 2.2.0 L:667-681), each output URI checked against the run root's bucket
   prefix and its local folder uploaded (uploadOutputArtifacts, 2.2.0 L:419-, 2.17.0 L:778-832), output parameters read
   (collectOutputParameters 2.2.0 L:338-369); on failure, 2.17.0 uploads `executor-logs` only (L:448-458).

The object store is opened as the launcher opens it: the session of the run (endpoint, TLS, the
secret's credentials, handed over in task.json in place of the Kubernetes API read). The result goes
to /kfp-launcher/result.json for the harness, which records the artifacts.
"""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kfp_backend as kb  # noqa: E402


def _client(session):
    import boto3
    import botocore.config

    scheme = "http://" if session.get("disableSSL", True) else "https://"
    endpoint = session.get("endpoint")
    return boto3.client("s3", endpoint_url=(scheme + endpoint) if endpoint else None,
                        aws_access_key_id=session["accessKey"], aws_secret_access_key=session["secretKey"],
                        region_name=session.get("region") or "us-east-1",
                        config=botocore.config.Config(s3={"addressing_style": "path"},
                                                      retries={"max_attempts": 2}))


def _split(uri):
    bucket, _, key = uri.split("://", 1)[1].partition("/")
    return bucket, key


def _download(s3, uri, local, counts):
    bucket, key = _split(uri)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
        for item in page.get("Contents", []):
            rest = item["Key"][len(key):].lstrip("/")
            if item["Key"] != key and not item["Key"].startswith(key.rstrip("/") + "/"):
                continue  # 2.17.0 isBlobKeyUnderPrefix (object_store.go:171-174)
            target = os.path.join(local, rest) if rest else local
            os.makedirs(os.path.dirname(target), exist_ok=True)
            s3.download_file(bucket, item["Key"], target)
            counts["objects"] += 1
            counts["bytes"] += item["Size"]


def _upload(s3, uri, local):
    if not os.path.exists(local):
        return  # "Local filepath %q does not exist": logged, not an error
    bucket, key = _split(uri)
    if os.path.isfile(local):
        s3.upload_file(local, bucket, key)
        return
    for folder, _, files in os.walk(local):
        for name in files:
            path = os.path.join(folder, name)
            s3.upload_file(path, bucket, key.rstrip("/") + "/" + os.path.relpath(path, local))


def _run(argv, backend, logs_path):
    if not backend.merged_streams:
        return subprocess.call(argv)
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    with open(logs_path, "wb") as logs:
        for line in process.stdout:
            sys.stdout.buffer.write(line)
            sys.stdout.buffer.flush()
            logs.write(line)
    return process.wait()


def main(task_file, argv):
    with open(task_file) as f:
        task = json.load(f)
    backend = kb.VERSIONS[task["version"]]
    executor_input = task["executorInput"]
    outputs = executor_input["outputs"]["artifacts"]
    s3 = _client(task["session"])
    result = {"downloaded": {"objects": 0, "bytes": 0}, "exitCode": 1}
    result_file = os.path.join(os.path.dirname(task_file), "result.json")

    def finish(code, **more):
        result.update(more, exitCode=code)
        with open(result_file, "w") as out:
            json.dump(result, out)
        return code

    try:
        for artifact_list in outputs.values():  # 1. prepareOutputFolders
            for artifact in artifact_list["artifacts"]:
                os.makedirs(os.path.dirname(kb.local_path_for_uri(artifact["uri"])), exist_ok=True)
        for artifact_list in executor_input["inputs"].get("artifacts", {}).values():  # 2. downloadArtifacts
            listed = artifact_list["artifacts"] if backend.version == "2.17.0" else artifact_list["artifacts"][:1]
            for artifact in listed:
                _download(s3, artifact["uri"], kb.local_path_for_uri(artifact["uri"]), result["downloaded"])
    except Exception as err:  # noqa: BLE001  (the launcher's failure before the command)
        print(f"launcher: {type(err).__name__}: {err}", flush=True)
        return finish(1, launcherError=f"{type(err).__name__}: {err}")

    logs = outputs.get(kb.LOGS_KEY, {}).get("artifacts", [{}])[0]
    logs_path = kb.local_path_for_uri(logs["uri"]) if logs else None
    code = _run(argv, backend, logs_path)  # 3. the command
    if code != 0:
        if backend.version == "2.17.0" and logs_path:
            _upload(s3, logs["uri"], logs_path)
        return finish(code)

    output_file = executor_input["outputs"]["outputFile"]  # 4. executor output, uploads, parameters
    executor_output = {}
    if os.path.exists(output_file):
        with open(output_file) as f:
            executor_output = json.load(f)
        problems = kb.executor_output_problems(backend, executor_output)
        if problems:  # protojson.Unmarshal refuses unknown fields
            return finish(1, launcherError="failed to parse executor output: " + "; ".join(problems[:3]))
    prefixed = kb.prefixed_bucket(task["runRoot"])
    merged = {}
    for key, artifact_list in outputs.items():
        artifact = dict(artifact_list["artifacts"][0])
        produced = (executor_output.get("artifacts", {}).get(key) or {}).get("artifacts") or []
        if produced and not (backend.version == "2.17.0" and key == kb.LOGS_KEY):
            if produced[0].get("uri"):
                artifact["uri"] = produced[0]["uri"]
            if produced[0].get("metadata"):
                artifact["metadata"] = {**artifact.get("metadata", {}), **produced[0]["metadata"]}
        try:
            kb.key_from_uri(prefixed, artifact["uri"])
        except ValueError as err:
            print(f"launcher: failed to upload output artifact {key!r}: {err}", flush=True)
            return finish(1, launcherError=f"failed to upload output artifact {key!r}: {err}")
        _upload(s3, artifact["uri"], kb.local_path_for_uri(artifact["uri"]))
        merged[key] = artifact
    parameters = dict(executor_output.get("parameterValues", {}))
    for key, spec in executor_input["outputs"].get("parameters", {}).items():
        if key not in parameters:
            if not os.path.exists(spec["outputFile"]):
                return finish(1, launcherError=f"failed to read output parameter name={key!r}")
            with open(spec["outputFile"]) as f:
                parameters[key] = f.read()
    return finish(0, outputs=merged, parameters=parameters, executorOutput=executor_output)


if __name__ == "__main__":
    separator = sys.argv.index("--")
    sys.exit(main(sys.argv[1], sys.argv[separator + 1:]))
