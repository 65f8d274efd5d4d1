"""`python -m bench`: the benchmarks by name, and one benchmark's options passed through to it
(`python -m bench pipeline_vs_reference --repeats 3`, as the README and bench/RESULTS.md write it)."""
import types

import pytest

from bench import __main__ as bench_main


@pytest.fixture
def ran(monkeypatch):
    """Each benchmark module run, with the arguments its main() was given (no benchmark really runs)."""
    calls = []

    def module(name):
        return types.SimpleNamespace(main=lambda argv: calls.append((name, list(argv))) or 0)

    monkeypatch.setattr(bench_main.importlib, "import_module", module)
    return calls


def test_one_benchmark_gets_its_options(ran):
    assert bench_main.main(["pipeline_vs_reference", "--repeats", "3"]) == 0
    assert ran == [("bench.pipeline_vs_reference", ["--repeats", "3"])]


def test_several_benchmarks_run_with_their_defaults(ran):
    assert bench_main.main(["scale", "spans"]) == 0
    assert ran == [("bench.scale", []), ("bench.spans", [])]


def test_options_without_exactly_one_benchmark_are_refused(ran, capsys):
    assert bench_main.main(["--repeats", "3"]) == 2
    assert bench_main.main(["scale", "spans", "--rows", "10"]) == 2
    assert ran == [] and "one named benchmark" in capsys.readouterr().err


def test_an_unknown_benchmark_is_refused(ran):
    assert bench_main.main(["pipeline_vs_referense"]) == 2 and ran == []
