"""`python -m bench [NAME ...]`: run the named benchmarks (default: all), one after the other, each with its
defaults; `python -m bench NAME --option ...` runs one with its options (`python -m bench.NAME --help` lists them).

Each benchmark measures its own reference in the same run and reports ratios against it, so figures
stay comparable across machines and across runs on a busy machine.
"""
import importlib
import sys

BENCHMARKS = ("pipeline_vs_reference", "training_throughput", "serving_latency", "serving_graph", "serving_warmup", "new_connection",
              "serving_hostile", "serving_fuzz", "scale", "spans", "span_cost", "evaluator_processes")


def main(argv=None) -> int:
    args = list(argv if argv is not None else sys.argv[1:])
    names = []
    while args and not args[0].startswith("-"):
        names.append(args.pop(0))
    if args and len(names) != 1:  # each benchmark has its own options
        print(f"error: options ({' '.join(args)}) go to one named benchmark: python -m bench NAME {' '.join(args)}",
              file=sys.stderr)
        return 2
    names = names or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"error: unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    failed = 0
    for name in names:
        print(f"== {name}")
        failed += int(importlib.import_module(f"bench.{name}").main(args) != 0)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
