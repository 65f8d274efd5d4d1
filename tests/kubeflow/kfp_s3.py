"""An S3 server on loopback standing in for Kubeflow's MinIO: moto's server mode (PyPI, pinned)."""
from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time

ACCESS_KEY, SECRET_KEY = "minio-test-access", "minio-test-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client(endpoint: str):
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ACCESS_KEY,
                        aws_secret_access_key=SECRET_KEY, region_name="us-east-1")


@contextlib.contextmanager
def s3_server(*buckets: str):
    """Yields the endpoint URL of a fresh moto S3 server with `buckets` created."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("moto S3 server did not start")
                time.sleep(0.2)
        s3 = client(endpoint)
        for bucket in buckets:
            s3.create_bucket(Bucket=bucket)
        yield endpoint
    finally:
        process.terminate()
        process.wait(10)


def keys(endpoint: str, bucket: str, prefix: str = ""):
    s3 = client(endpoint)
    found = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        found += [o["Key"] for o in page.get("Contents", [])]
    return found
