"""An S3 server on loopback standing in for Kubeflow's MinIO: moto's server mode (PyPI, pinned)."""
from __future__ import annotations

import contextlib
import os
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


def port_is_free(port: int) -> bool:
    """Whether a server could listen on `port` now. With SO_REUSEADDR, as servers bind (moto's werkzeug
    server does): the connections a server that just stopped closed on that port (TIME_WAIT) do not
    hold it, only a process listening there does."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


@contextlib.contextmanager
def s3_server(*buckets: str, port: int = 0):
    """Yields the endpoint URL of a fresh moto S3 server with `buckets` created (on `port`, else a free one)."""
    port = port or free_port()
    # Path-style requests only, whatever the Host header says: a pod reaches KFP's store by a name
    # (minio-service.kubeflow, seaweedfs.kubeflow), whose first label moto would otherwise take for a
    # bucket; KFP's own store is addressed path-style (forcePathStyle, objectstore/config.go).
    env = {**os.environ, "S3_IGNORE_SUBDOMAIN_BUCKETNAME": "true"}
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
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
