"""`python -m bench [NAME ...]`: run the named benchmarks (default: all), one after the other.

Each benchmark measures its own reference in the same run and reports ratios against it, so figures
stay comparable across machines and across runs on a busy machine.
"""
import importlib
import sys

BENCHMARKS = ("pipeline_vs_reference", "training_throughput", "serving_latency", "serving_graph", "serving_warmup", "new_connection",
              "serving_hostile", "serving_fuzz", "scale", "spans", "evaluator_processes")


def main(argv=None) -> int:
    names = list(argv if argv is not None else sys.argv[1:]) or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"error: unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    failed = 0
    for name in names:
        print(f"== {name}")
        failed += int(importlib.import_module(f"bench.{name}").main([]) != 0)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
