"""Which Beam runner the Beam-using components (ExampleGen, StatisticsGen, Transform, Evaluator) run on.

`PipelineConfig.beam_pipeline_args()` turns the config's Beam fields into the pipeline options TFX
hands every Beam-using component, locally and in the compiled Kubeflow spec:

| `--beam-runner` | Beam runner | options it writes (from the config / `--beam-option NAME=VALUE`) |
|---|---|---|
| `direct` (default) | DirectRunner | `direct_running_mode` (`--beam-mode`), `direct_num_workers` |
| `portable` | PortableRunner | `job_endpoint` (`--beam-job-endpoint`, required), `environment_type` / `environment_config` (`--beam-environment`, `--beam-environment-config`; default LOOPBACK), `job_server_timeout` (a day: Beam's 60 s default is also the deadline of a running job's state stream) |
| `DataflowRunner` | DataflowRunner (Runner v2) | `project`, `region`, `temp_location` (required), `sdk_container_image` (default: the pipeline image) |
| `FlinkRunner` | FlinkRunner | `flink_master` (required), `environment_type` / `environment_config` (default DOCKER with the pipeline image) |
| `SparkRunner` | SparkRunner | `spark_master_url` (required), `environment_type` / `environment_config` (default DOCKER with the pipeline image) |

The workers of a portable runner run the components' Beam code, which imports our modules
(`trainer_module`, ...): they must run the pipeline image (DOCKER, Dataflow's
`sdk_container_image`) or a Python environment with this repository installed (EXTERNAL worker
pool, PROCESS), else they fail with ModuleNotFoundError (tensorflow/tfx#4948). So the presets
default their worker image to the pipeline image, and refuse to guess when there is none.

Every preset also writes `pickle_library=cloudpickle` (see `PICKLE_LIBRARY`).

Further `--beam-option NAME=VALUE` pairs are appended as `--NAME=VALUE` (e.g. `max_num_workers=20`,
`flink_version=1.18`, `parallelism=4`); a pair naming an option a preset writes replaces its value.

Since every preset's workers already have this installation, `beam_steps` stops TFX from packaging
itself for them on every Beam component (see there).
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Sequence, Tuple

ENVIRONMENT_TYPES = ("DOCKER", "PROCESS", "EXTERNAL", "LOOPBACK")
# The direct runner's modes: "auto" runs the pipeline in one process and lets pipeline/beam_parallelism.py
# give the components that gain from it several (per component, by the size of their input).
BEAM_MODES = ("auto", "in_memory", "multi_processing")
JOB_SERVER_TIMEOUT_S = 86400  # the longest one component's Beam job may run on a portable runner
# Beam's pickler of the pipeline's functions and DoFns, on every runner (its `pickle_library` option; Beam 2.59's
# default is dill). Each Beam component pickles every DoFn of its pipeline when it submits it and unpickles it
# again in each bundle processor: TF-Transform's analysis has a few hundred. On the default data
# (`taxi-pipeline run`, two alternated pairs, 2026-12-07): Transform 9.0 s with cloudpickle against 9.9 s
# with dill, the Evaluator 8.2-8.4 s against 8.8-9.1 s, the same metrics.
PICKLE_LIBRARY = "cloudpickle"


class BeamConfigError(ValueError):
    """The Beam runner settings are incomplete or contradictory; the message says which option to give."""


@dataclasses.dataclass(frozen=True)
class Preset:
    name: str  # what --beam-runner takes
    runner: str  # Beam's --runner
    required: Tuple[str, ...]  # options that must be given (NAME of --beam-option, or the dedicated flag)
    environment: bool  # takes environment_type / environment_config
    doc: str


PRESETS: Dict[str, Preset] = {p.name: p for p in (
    Preset("direct", "DirectRunner", (), False, "in this process or local processes (--beam-mode)"),
    Preset("portable", "PortableRunner", ("job_endpoint",), True,
           "any portable job service: Beam's own (local_job_service_main), Flink's or Spark's job server"),
    Preset("DataflowRunner", "DataflowRunner", ("project", "region", "temp_location"), False,
           "Google Cloud Dataflow, Runner v2; workers run sdk_container_image"),
    Preset("FlinkRunner", "FlinkRunner", ("flink_master",), True, "a Flink cluster (host:port of its REST endpoint)"),
    Preset("SparkRunner", "SparkRunner", ("spark_master_url",), True, "a Spark cluster (spark://host:7077)"),
)}
BEAM_RUNNERS = tuple(PRESETS)


def parse_options(pairs: Sequence[str]) -> Dict[str, str]:
    """NAME=VALUE (or --NAME=VALUE) pairs -> {NAME: VALUE}, in order."""
    options: Dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.lstrip("-").partition("=")
        if not sep or not name:
            raise BeamConfigError(f"Beam option {pair!r} must be NAME=VALUE (e.g. project=my-project)")
        options[name.replace("-", "_")] = value
    return options


def pipeline_args(runner: str, *, beam_mode: str = "auto", beam_workers: int = 1,
                  job_endpoint: Optional[str] = None, environment: Optional[str] = None,
                  environment_config: Optional[str] = None, options: Sequence[str] = (),
                  image: Optional[str] = None) -> List[str]:
    """The Beam pipeline options for `runner` (a `PRESETS` name); `image` is the pipeline image, if any."""
    preset = PRESETS.get(runner)
    if preset is None:
        raise BeamConfigError(f"beam runner must be one of {', '.join(BEAM_RUNNERS)}, not {runner!r}")
    extra = parse_options(options)
    if preset.name == "direct":
        several = beam_mode == "multi_processing"
        args = {"direct_running_mode": "multi_processing" if several else "in_memory",
                "direct_num_workers": str(beam_workers) if several else "1", "pickle_library": PICKLE_LIBRARY}
        if environment or job_endpoint:
            raise BeamConfigError("--beam-job-endpoint and --beam-environment need --beam-runner portable "
                                  "(or FlinkRunner / SparkRunner)")
        args.update(extra)
        return [f"--{k}={v}" for k, v in args.items()]

    args: Dict[str, str] = {"runner": preset.runner, "pickle_library": PICKLE_LIBRARY}
    if job_endpoint:
        args["job_endpoint"] = job_endpoint
    if preset.environment:
        env_type = (environment or extra.pop("environment_type", None) or ("DOCKER" if image else
                    "LOOPBACK" if preset.name == "portable" else None))
        if env_type is None:
            raise BeamConfigError(
                f"{preset.name} workers must be able to import this pipeline's modules (tensorflow/tfx#4948): "
                "give --beam-environment DOCKER with --beam-environment-config IMAGE (an image built from "
                "kubeflow/Dockerfile), or EXTERNAL with a worker pool started in this repository's venv")
        env_type = env_type.upper()
        if env_type not in ENVIRONMENT_TYPES:
            raise BeamConfigError(f"beam environment must be one of {', '.join(ENVIRONMENT_TYPES)}, not {env_type!r}")
        args["environment_type"] = env_type
        env_config = environment_config or extra.pop("environment_config", None)
        if env_config is None and env_type == "DOCKER":
            env_config = image
        if env_config is None and env_type in ("DOCKER", "EXTERNAL", "PROCESS"):
            what = {"DOCKER": "the worker image", "EXTERNAL": "the worker pool's host:port",
                    "PROCESS": 'the command JSON ({"command": ".../boot"})'}[env_type]
            raise BeamConfigError(f"--beam-environment {env_type} needs --beam-environment-config: {what}")
        if env_config is not None and env_type != "LOOPBACK":
            args["environment_config"] = env_config
        # PortableRunner (and Flink's and Spark's, built on it) uses job_server_timeout (Beam's default 60 s)
        # as the deadline of the job's state stream too: a longer Beam job fails with DEADLINE_EXCEEDED.
        args["job_server_timeout"] = str(JOB_SERVER_TIMEOUT_S)
    elif environment or environment_config:
        raise BeamConfigError(f"{preset.name} takes no --beam-environment; its workers run sdk_container_image")
    if preset.name == "DataflowRunner":
        container = extra.pop("sdk_container_image", None) or image
        if not container:
            raise BeamConfigError("DataflowRunner workers must be able to import this pipeline's modules "
                                  "(tensorflow/tfx#4948): give --beam-option sdk_container_image=IMAGE "
                                  "(an image built from kubeflow/Dockerfile), or compile with --image")
        args["sdk_container_image"] = container
    args.update(extra)
    missing = [name for name in preset.required if not args.get(name)]
    if missing:
        flags = ", ".join("--beam-job-endpoint HOST:PORT" if n == "job_endpoint" else f"--beam-option {n}=..."
                          for n in missing)
        raise BeamConfigError(f"--beam-runner {preset.name} needs {flags}")
    if preset.name == "DataflowRunner" and not args["temp_location"].startswith("gs://"):
        raise BeamConfigError(f"Dataflow's temp_location must be a gs:// path, not {args['temp_location']!r}")
    return [f"--{k}={v}" for k, v in args.items()]


def beam_steps():
    """Within: what every Beam step of a local run runs with (`tfx_internals.beam_steps_patched`).

    - TFX's Beam executors take the pipeline options as given, without an sdist of TFX itself. Given any
      pipeline options, TFX's `BaseBeamExecutor` calls `dependency_utils.make_beam_dependency_flags`, which,
      unless an option names the workers' dependencies (extra_packages, setup_file, sdk_container_image,
      ...), copies the installed 48 MB `tfx` tree into a new `/tmp/tmp*/` folder, runs `setup.py sdist` on it
      and adds `--extra_package=<that sdist>`; the folder is never deleted. Measured on the default run
      (4 Beam components): 2.1-2.5 s each, about 10 s of the run, and 196 MB left in /tmp per run (700 such
      folders, 34 GB, had filled this machine's disk). The sdist is of no use to any preset here: the
      DirectRunner's workers are this process or its children, LOOPBACK's this process, EXTERNAL/PROCESS
      workers run from this repository's venv and DOCKER/Dataflow workers the pipeline image, all with this
      same TFX (the presets refuse workers that could not import our modules, tensorflow/tfx#4948).
    - Beam works out each DoFn's state and timer specs once (`tfx_internals.memoize_dofn_specs`: a second
      of Transform's 9 on the default data).
    """
    from kubeflow import tfx_internals

    return tfx_internals.beam_steps_patched()


def add_arguments(parser) -> None:
    """The Beam runner flags `run` and `compile` share."""
    parser.add_argument("--beam-runner", choices=BEAM_RUNNERS, default="direct",
                        help="where the Beam-using components run (default direct; see pipeline/beam_runners.py)")
    parser.add_argument("--beam-job-endpoint", default=None, metavar="HOST:PORT",
                        help="the job service of --beam-runner portable (or a Flink/Spark job server)")
    parser.add_argument("--beam-environment", default=None, type=str.upper, choices=ENVIRONMENT_TYPES,
                        help="where portable/Flink/Spark workers run (default LOOPBACK locally, DOCKER with the image)")
    parser.add_argument("--beam-environment-config", default=None, metavar="CONFIG",
                        help="the worker image (DOCKER) or worker pool host:port (EXTERNAL)")
    parser.add_argument("--beam-option", action="append", default=[], metavar="NAME=VALUE",
                        help="a further Beam pipeline option, repeatable (project=..., region=..., "
                             "temp_location=gs://..., flink_master=..., spark_master_url=...)")


def fields_from_args(args) -> Dict[str, object]:
    """PipelineConfig fields from the flags of `add_arguments`."""
    return dict(beam_runner=args.beam_runner, beam_job_endpoint=args.beam_job_endpoint,
                beam_environment=args.beam_environment, beam_environment_config=args.beam_environment_config,
                beam_options=tuple(args.beam_option))
