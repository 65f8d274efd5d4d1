"""bench/serving_ab's bookkeeping: variant specs, a balanced order, and the CPU of a process tree."""
import os
import signal
import subprocess
import sys
import time

import pytest

from bench.serving_ab import parse_variant, round_order, summarize
from bench.serving_latency import process_cpu_s, process_tree_cpu_s


def test_a_variant_spec_gives_its_environment_and_server_flags():
    assert parse_variant("plain") == ("plain", {}, [])
    name, env, flags = parse_variant("poll:GRPC_POLL_STRATEGY=poll,ARGS=--gil_switch_interval_ms=5|--grpc_processes=2")
    assert (name, env, flags) == ("poll", {"GRPC_POLL_STRATEGY": "poll"},
                                  ["--gil_switch_interval_ms=5", "--grpc_processes=2"])
    for bad in ("default", "noop_aio:X=1", ":X=1", "v:NOEQUALS"):
        with pytest.raises(ValueError):
            parse_variant(bad)


def test_every_server_takes_every_position_equally_often():
    names = ["noop", "noop_aio", "default", "a", "b"]
    orders = [round_order(names, r) for r in range(2 * len(names))]
    assert all(sorted(order) == sorted(names) for order in orders)
    for position in range(len(names)):
        counts = {name: sum(order[position] == name for order in orders) for name in names}
        assert set(counts.values()) == {2}, counts


def test_paired_ratios_compare_each_round_with_the_same_round_of_the_default():
    def phase(rate):
        return {"throughput_rps": rate, "p50_ms": 1.0, "server_cpu_us_per_request": 300.0,
                "load_generator_cpu_us_per_request": 150.0, "cores_busy": 1.5}

    rounds = {"noop": [phase(5000)] * 3, "noop_aio": [phase(4000)] * 3,
              "default": [phase(r) for r in (3000, 2000, 4000)], "v": [phase(r) for r in (3300, 1900, 4400)]}
    summary = summarize(rounds, ["v"])
    assert summary["default"]["vs_noop"] == pytest.approx(0.6) and summary["default"]["vs_noop_aio"] == pytest.approx(0.75)
    assert summary["v"]["paired_ratio_vs_default"] == pytest.approx(1.1)  # 1.1, 0.95, 1.1
    assert summary["v"]["faster_than_default_in"] == 2


def test_the_cpu_of_a_process_tree_counts_its_children():
    # A parent that starts a child which burns CPU for ~1 s, then both wait.
    code = ("import subprocess, sys, time; c = subprocess.Popen([sys.executable, '-c', "
            "'import time\\nt = time.process_time()\\nwhile time.process_time() - t < 1.0: pass\\ntime.sleep(30)']); "
            "time.sleep(30)")
    parent = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while process_tree_cpu_s(parent.pid) < 1.0 and time.monotonic() < deadline:
            time.sleep(0.1)
        own = process_cpu_s(parent.pid)
        assert process_tree_cpu_s(parent.pid) >= 1.0 > own + 0.5  # the child's second is counted, not the parent's
    finally:
        os.killpg(parent.pid, signal.SIGKILL)  # the child too
        parent.wait()

