"""Acceptance 2: a version pushed while clients send traffic swaps in with zero failed requests.

The new version is written the way TFX's Pusher does it (complete copy under a temporary name,
then renamed to its numeric directory). Clients keep sending throughout, with and without
server-side batching; every request must succeed, and the answering version must switch from the
old to the new one and never go back.
"""
from __future__ import annotations

import os
import shutil
import threading
import time

import grpc
import pytest

from serving.batching import batcher as batching
from serving.client import ServingClient, raw_input_dtypes, rows_to_inputs
from serving_helpers import config_for, running_server, taxi_rows


def _push(base, source_version_dir, version):
    """Pusher-style: write the whole version aside, then one atomic rename into place."""
    staging = os.path.join(base, f".tmp-push-{version}")
    shutil.copytree(source_version_dir, staging)
    os.rename(staging, os.path.join(base, str(version)))


@pytest.mark.parametrize("batched", [False, True], ids=["unbatched", "batched"])
def test_push_during_traffic_swaps_version_with_zero_failures(taxi_like_base, tmp_path, batched):
    base = tmp_path / "taxi"
    shutil.copytree(taxi_like_base / "taxi" / "1", base / "1")
    options = {"batching": batching.BatchingOptions(max_batch_size=16, batch_timeout_micros=500)} if batched else {}
    with running_server(config_for(taxi=str(base)), wait_for=["taxi"], poll_wait_s=0.1, **options) as server:
        target = f"127.0.0.1:{server.grpc_port}"
        with ServingClient(target) as probe:
            defs = probe.signature_defs("taxi")
        inputs = rows_to_inputs(taxi_rows(3), defs["serving_default"], raw_input_dtypes(defs))
        stop = threading.Event()
        results = [[] for _ in range(4)]  # per client: answering versions, or the error
        errors = []

        def client_loop(out):
            with ServingClient(target) as client:
                while not stop.is_set():
                    try:
                        out.append(client.predict("taxi", inputs)[1].model_spec.version.value)
                    except grpc.RpcError as err:  # any failure fails the test
                        errors.append(f"{err.code().name}: {err.details()}")

        threads = [threading.Thread(target=client_loop, args=(out,)) for out in results]
        for t in threads:
            t.start()
        try:
            time.sleep(0.5)
            _push(str(base), str(base / "1"), 2)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not all(out and out[-1] == 2 for out in results):
                time.sleep(0.05)
            time.sleep(0.5)  # keep sending while version 1 unloads
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=30)

        assert errors == []
        for out in results:
            assert out[0] == 1 and out[-1] == 2, f"version did not switch: first {out[:1]}, last {out[-1:]}"
            switch = out.index(2)
            assert set(out[:switch]) == {1} and set(out[switch:]) == {2}, "answers went back to version 1"
        assert sum(len(out) for out in results) > 20
        # The old version is unloaded once the new one serves (latest-1 policy).
        with ServingClient(target) as client:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                states = {s.version: s.state for s in client.status("taxi")}
                if states.get(1) == 50:  # END
                    break
                time.sleep(0.05)
            assert states == {1: 50, 2: 30}


def test_broken_version_does_not_replace_a_serving_one(taxi_like_base, tmp_path):
    """A version that fails to load is reported in status; the previous one keeps serving."""
    base = tmp_path / "taxi"
    shutil.copytree(taxi_like_base / "taxi" / "1", base / "1")
    with running_server(config_for(taxi=str(base)), wait_for=["taxi"], poll_wait_s=0.1) as server, \
            ServingClient(f"127.0.0.1:{server.grpc_port}") as client:
        (base / "2").mkdir()
        (base / "2" / "saved_model.pb").write_bytes(b"not a saved model")
        deadline = time.monotonic() + 30
        status = {}
        while time.monotonic() < deadline:
            status = {s.version: s for s in client.status("taxi")}
            if 2 in status and status[2].state == 50:
                break
            time.sleep(0.05)
        assert status[2].state == 50 and status[2].status.error_code != 0
        assert "failed to load" in status[2].status.error_message
        assert status[1].state == 30
        defs = client.signature_defs("taxi")
        inputs = rows_to_inputs(taxi_rows(1), defs["serving_default"], raw_input_dtypes(defs))
        assert client.predict("taxi", inputs)[1].model_spec.version.value == 1
