"""Custom executor for the standard TFX Trainer that trains on N workers.

`custom_config["workers"]` (from PipelineConfig.trainer_custom_config()) picks the path:
- 1: TFX's GenericExecutor, `run_fn` in this process;
- N > 1 with no pipeline image (local runs): N local worker processes (local_launcher);
- N > 1 with `custom_config["image"]` set, or when running inside a Kubernetes pod (compiled
  Kubeflow pipelines): a TFJob of N workers in that image (tfjob_launcher).
In both multi-worker paths every worker runs `components.multiworker_trainer.worker` on the same
serialized execution, so `run_fn` sees the FnArgs it would see in process.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional

import components  # noqa: F401  (pins TF_USE_LEGACY_KERAS before TensorFlow loads)
from tfx import types
from tfx.components.trainer import executor as trainer_executor
from tfx.dsl.io import fileio
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import json_utils, path_utils

from components.multiworker_trainer import (job_spec, local_launcher, step_pod, tfjob_launcher, tfjob_manifest,
                                            training_length)
from trainer_module import records
from components.multiworker_trainer.settings import (  # noqa: F401  (TrainerConfigError re-exported)
    TRAINING_STATISTICS, TrainerConfigError, TrainerSettings)

log = logging.getLogger(__name__)



class MultiWorkerExecutor(trainer_executor.GenericExecutor):
    """GenericExecutor that runs `run_fn` on N workers under MultiWorkerMirroredStrategy."""

    def Do(self, input_dict: Dict[str, List[types.Artifact]], output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        custom_config = json_utils.loads(exec_properties.get(standard_component_specs.CUSTOM_CONFIG_KEY) or "null")
        settings = TrainerSettings.from_custom_config(custom_config)
        exec_properties = with_raw_eval_files(input_dict, exec_properties)
        # No num_steps: the steps follow the training split's rows (custom_config["epochs"]).
        plan = training_length.resolve(input_dict, exec_properties, custom_config, settings.workers)
        # run_fn holds a split it reads more than once in memory: it needs the rows counted here.
        exec_properties = _with_custom_config(exec_properties, train_rows=plan["train_rows"])
        model_run_dir = artifact_utils.get_single_uri(output_dict[standard_component_specs.MODEL_RUN_KEY])
        if settings.workers == 1:
            super().Do(input_dict, output_dict, exec_properties)
            training_length.write_record(model_run_dir, plan)
            store_training_statistics(input_dict, output_dict)
            return
        self._log_startup(input_dict, output_dict, exec_properties)

        model_uri = artifact_utils.get_single_uri(output_dict[standard_component_specs.MODEL_KEY])
        serving_model_dir = path_utils.serving_model_dir(model_uri)
        spec = job_spec.write_spec(job_spec.spec_path(model_run_dir), input_dict, output_dict, exec_properties)

        def check_outputs(*_):
            check_saved_model(serving_model_dir, settings.workers)
            check_worker_reports(model_run_dir, settings.workers)

        if settings.uses_tfjob:
            # Checked while the TFJob still exists: it is deleted only afterwards.
            self._run_tfjob(settings, spec, on_success=check_outputs)
        else:
            log_dir = settings.log_dir or os.path.join(model_run_dir, "logs")
            results = local_launcher.LocalLauncher(settings.workers, Path(log_dir), settings.worker_timeout_s).run(spec)
            log.info("trainer workers finished: %s",
                     ", ".join(f"worker {r.index} in {r.seconds:.1f} s" for r in results))
            check_outputs()
        training_length.write_record(model_run_dir, plan)
        store_training_statistics(input_dict, output_dict)
        log.info("multi-worker training complete; model in %s", serving_model_dir)

    def _run_tfjob(self, settings: TrainerSettings, spec: str, on_success) -> None:
        """Trains as a TFJob whose workers run like this step (step_pod.py says why from its pod)."""
        api = tfjob_launcher.api_client(settings.kubernetes_api_url)
        namespace, step = settings.namespace, None
        if tfjob_launcher.in_cluster():
            namespace = tfjob_launcher.current_namespace(namespace)
            try:
                step = step_pod.read(api, namespace)
            except Exception as err:  # noqa: BLE001  (RBAC may forbid reading pods: go on with the config)
                log.warning("could not read this step's pod (%s); TFJob workers get the namespace's default "
                            "service account and only the configured image pull secrets", err)
        image = settings.image or (step.image if step else None)
        if not image:
            raise TrainerConfigError("a TFJob needs the pipeline image: set it in the pipeline config "
                                     "(`taxi-pipeline compile --image ...`)")
        pull_secrets = settings.image_pull_secrets
        if pull_secrets is None:
            pull_secrets = step.image_pull_secrets if step else ()
        if step:
            pvc_mounts = step.pvc_mounts
        else:
            pvc_mounts = _pipeline_volumes() if tfjob_launcher.in_cluster() else None
        from kubeflow import object_store

        env, secret_env = object_store.worker_environment(spec)  # an s3:// root: same store, same secret
        job = tfjob_manifest.build_tfjob(
            name=tfjob_manifest.job_name("taxi-trainer"), namespace=namespace, image=image,
            num_workers=settings.workers, spec_path=spec, service_account=step.service_account if step else None,
            pvc_mounts=pvc_mounts, image_pull_secrets=pull_secrets, env=env, secret_env=secret_env,
            active_deadline_s=int(settings.worker_timeout_s) + 60)
        launcher = tfjob_launcher.TFJobLauncher(namespace, settings.worker_timeout_s, api=api,
                                                poll_interval_s=settings.tfjob_poll_interval_s)
        result = launcher.run(job, on_success=on_success)
        log.info("TFJob %s/%s succeeded in %.1f s", result.namespace, result.name, result.seconds)


def with_raw_eval_files(input_dict, exec_properties):
    """exec_properties whose custom_config names the raw eval split (`raw_examples` input, else `examples`), for run_fn."""
    raw = input_dict.get("raw_examples") or input_dict.get(standard_component_specs.EXAMPLES_KEY) or []
    if not raw:
        return exec_properties
    pattern = os.path.join(artifact_utils.get_split_uri(raw, records.EVAL_SPLIT), "*")
    return _with_custom_config(exec_properties, raw_eval_files=pattern)


def _with_custom_config(exec_properties, **values):
    """A copy of exec_properties whose custom_config JSON also carries `values` (what run_fn reads)."""
    custom_config = json_utils.loads(exec_properties.get(standard_component_specs.CUSTOM_CONFIG_KEY) or "null")
    updated = dict(exec_properties)
    updated[standard_component_specs.CUSTOM_CONFIG_KEY] = json_utils.dumps({**(custom_config or {}), **values})
    return updated


def training_statistics_path(model_uri: str) -> str:
    """Where `store_training_statistics` puts them in a Model artifact (the DriftCheck reads them there)."""
    return os.path.join(path_utils.serving_model_dir(model_uri), TRAINING_STATISTICS)


def store_training_statistics(input_dict, output_dict) -> Optional[str]:
    """Copy the train split's statistics (`statistics` input) into the exported SavedModel."""
    statistics = input_dict.get("statistics") or []
    if not statistics:
        return None
    source = os.path.join(artifact_utils.get_split_uri(statistics, records.TRAIN_SPLIT), records.STATISTICS_FILE)
    target = training_statistics_path(artifact_utils.get_single_uri(output_dict[standard_component_specs.MODEL_KEY]))
    fileio.makedirs(os.path.dirname(target))
    fileio.copy(source, target, overwrite=True)
    return target


def _pipeline_volumes() -> Optional[Dict[str, str]]:
    """A guess for when this step's pod cannot be read: the compiled-in claim (kubeflow/storage.py) if
    its mount path exists here. Wrong for a run submitted with `--pvc OTHER`, hence the warning."""
    try:
        from kubeflow import storage
    except ImportError:
        return None
    if not os.path.isdir(str(storage.MOUNT_PATH)):
        return None
    log.warning("TFJob workers mount claim %s (the compiled-in name) at %s: if the run was submitted with another "
                "--pvc they will not start; let the step's service account get pods "
                "(kubeflow/manifests/trainer-role.yaml) so they mount what the step has", storage.PVC_NAME,
                storage.MOUNT_PATH)
    return {storage.PVC_NAME: str(storage.MOUNT_PATH)}


def check_saved_model(serving_model_dir: str, workers: int) -> None:
    if not fileio.exists(serving_model_dir):
        raise RuntimeError(f"all {workers} trainer workers succeeded but none saved a model to "
                           f"{serving_model_dir}: run_fn must save the chief's model into "
                           "fn_args.serving_model_dir")


def check_worker_reports(model_run_dir: str, workers: int) -> List[Dict]:
    """Reads `<model_run>/workers/worker-<i>.json` (written by run_fn) for every i < `workers`.

    Fails in one line naming the workers without a report: a worker that did not report may have
    been stopped before it finished. Fails too if the reports show that the workers did not train
    as one synchronized job, e.g. each alone because TF_CONFIG was ignored.
    """
    reports_dir = os.path.join(model_run_dir, records.WORKER_REPORTS_DIR)
    reports, missing = [], []
    for index in range(workers):
        path = records.worker_report(model_run_dir, index)
        if not fileio.exists(path):
            missing.append(index)
            continue
        with fileio.open(path, "r") as f:  # fileio: the model run dir may be on an object store
            reports.append(json.loads(f.read()))
    if missing:
        raise RuntimeError(
            f"trainer worker{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))} of {workers} "
            f"wrote no report under {reports_dir}: each worker's run_fn must finish and write "
            "workers/worker-<task index>.json into fn_args.model_run_dir (was it stopped early? see its log)")
    unsynchronized = [r for r in reports if r.get("num_replicas_in_sync") != workers]
    if unsynchronized:
        raise RuntimeError(
            f"trainer workers did not train in sync: expected num_replicas_in_sync == {workers}, got "
            + ", ".join(f"worker {r.get('task_index')}: {r.get('num_replicas_in_sync')}" for r in unsynchronized)
            + "; run_fn must use MultiWorkerMirroredStrategy when TF_CONFIG names several workers")
    return reports
