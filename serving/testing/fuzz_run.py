"""One fuzzing run against a FuzzTarget: hypothesis draws the inputs, every answer is checked.

After each input: its answer is one TF Serving could give (fuzz_requests.check_*: a status code,
INTERNAL only for bytes gRPC cannot parse, no Python text), the server process is alive, and a good
Predict is answered correctly within `probe_limit_s` (it is timed: `summary["probe_ms"]`). The first
input that breaks a rule fails the run with AssertionError; hypothesis then shrinks it to the
smallest input that still does, which becomes a regression test (tests/serving/test_serving_hostile.py).
"""
from __future__ import annotations

import collections
import time
from typing import Dict

import numpy as np
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from serving.testing import fuzz_requests


def inputs():
    """What one fuzzing step sends: ("grpc", method, bytes, structured?) or ("rest", path, body, structured?)."""
    return st.one_of(*[fuzz_requests.grpc_calls().map(lambda c: ("grpc",) + c)] * 4,
                     fuzz_requests.rest_call().map(lambda c: ("rest",) + c))


def run(target, examples: int, random_seed: int, probe_limit_s: float = 2.0, call_timeout_s: float = 10.0,
        shrink: bool = True) -> Dict[str, object]:
    """Fuzz `target` with `examples` inputs drawn from `random_seed`; a summary of what it answered."""
    codes: collections.Counter = collections.Counter()
    probes, counts, messages = [], collections.Counter(), collections.Counter()

    def step(item):
        transport, where, payload, structured = item
        started = time.perf_counter()
        if transport == "grpc":
            code, details = target.call(where, payload, timeout_s=call_timeout_s)
            problem = fuzz_requests.check_grpc_answer(code, details)
            codes[f"grpc {code}"] += 1
            messages[f"{code} {details[:70]}"] += 1
        else:
            status, body = target.rest(where, payload, timeout_s=call_timeout_s)
            problem = fuzz_requests.check_rest_answer(status, body)
            codes[f"rest {status}"] += 1
        counts["inputs"] += 1
        counts["structured"] += int(structured)
        seconds = time.perf_counter() - started
        assert problem is None, f"{transport} {where} ({len(payload)} bytes): {problem}"
        assert seconds < call_timeout_s, f"{transport} {where}: answered after {seconds:.1f} s"
        assert target.alive(), f"the server exited after {transport} {where}; its log:\n{target.log()[-3000:]}"
        probe_s = target.probe(timeout_s=max(probe_limit_s, 10.0))
        probes.append(probe_s)
        assert probe_s < probe_limit_s, f"a good Predict took {probe_s:.3f} s after {transport} {where}"

    phases = (Phase.generate, Phase.shrink) if shrink else (Phase.generate,)
    test = settings(max_examples=examples, database=None, deadline=None, phases=phases,
                    suppress_health_check=list(HealthCheck))(seed(random_seed)(given(inputs())(step)))
    started = time.monotonic()
    test()
    ms = np.array(probes) * 1e3
    return {"inputs": counts["inputs"], "structured_inputs": counts["structured"], "codes": dict(codes),
            "top_messages": dict(messages.most_common(25)),
            "seconds": round(time.monotonic() - started, 1),
            "probe_ms": {"p50": round(float(np.percentile(ms, 50)), 3), "p99": round(float(np.percentile(ms, 99)), 3),
                         "max": round(float(ms.max()), 3)}}
