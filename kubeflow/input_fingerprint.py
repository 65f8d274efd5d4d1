"""The fingerprint of the input data, in what Kubeflow Pipelines' cache key sees.

KFP's cache key is made of a task's input parameters, its input artifacts' ML Metadata ids, its
outputs' types and its container's image and command (backend/src/v2/cacheutils/cache.go
GenerateCacheKey at 2.2.0 :51-106, 2.5.0 :52-107, 2.17.0 :151-229, which adds the PVC names): the
CSV files CsvExampleGen reads from the volume are not in it, and the open-source driver does not run
TFX's ExampleGen driver, which would fingerprint them (`lifecycle.preCacheCheck`: no reference to it
in backend/src/v2). New data at the same path would then be a cache hit for every step, and the run
would push nothing without saying why.

So the compiled pipeline (`spec_compat.add_input_fingerprint`) starts with an uncached task that
runs this module on CsvExampleGen's `input_base` and hands its output to CsvExampleGen as the
parameter `input_fingerprint`: unchanged files give the same parameter and KFP's cache works as
before; any change of the files (names, sizes, modification times: TFX's own fingerprint,
`tfx_internals.splits_fingerprint`) changes CsvExampleGen's key and everything after it. The step entry point takes the parameter out before
TFX sees it (`kubeflow/executor_input.py`).

    python -m kubeflow.input_fingerprint --input-base DIR --input-config JSON --output FILE
"""
import argparse
import os
import sys
from typing import List, Optional

PARAMETER = "input_fingerprint"  # CsvExampleGen's input parameter; kept from TFX by kubeflow/executor_input.py


def fingerprint(input_base: str, input_config_json: str) -> str:
    """TFX's fingerprint of the files each split's pattern matches under `input_base`."""
    from tfx.proto import example_gen_pb2
    from tfx.utils import proto_utils

    from kubeflow import tfx_internals

    config = example_gen_pb2.Input()
    proto_utils.json_to_proto(input_config_json, config)
    return tfx_internals.splits_fingerprint(input_base, config)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kubeflow.input_fingerprint", description=__doc__.split("\n")[0])
    parser.add_argument("--input-base", required=True)
    parser.add_argument("--input-config", required=True, help="CsvExampleGen's input_config (JSON)")
    parser.add_argument("--output", required=True, help="where KFP reads the output parameter")
    args = parser.parse_args(argv)
    try:
        value = fingerprint(args.input_base, args.input_config)
    except Exception as err:  # noqa: BLE001  (one line for the run's failure)
        print(f"TAXI_STEP_ERROR: no input data to fingerprint under {args.input_base}: "
              f"{type(err).__name__}: {' '.join(str(err).split())[:300]}", file=sys.stderr, flush=True)
        return 1
    os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
    with open(args.output, "w") as out:
        out.write(value)
    print(f"input fingerprint of {args.input_base}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
