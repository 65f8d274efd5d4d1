"""Where the pipeline and the model server meet inside the cluster.

One PersistentVolumeClaim (`kubeflow/manifests/storage-pvc.yaml`) holds the input data, the
serving base the Pusher writes to, and the trainer logs. Every pipeline step mounts it at
`MOUNT_PATH` (the submit helper adds the mount to the compiled spec); the TF Serving Deployment
mounts its `serving/` sub-directory read-only at `SERVING_MOUNT_PATH`. The compile and submit
commands and the manifests all read these names from here, and a test checks the YAML agrees,
so the three cannot drift apart.

The pipeline root (TFX's artifact store) is deliberately *not* on this volume: Kubeflow
Pipelines' launcher only accepts object-store pipeline roots (gs://, s3://, minio://).
"""
from __future__ import annotations

from pathlib import PurePosixPath
from typing import Dict, Iterable

PVC_NAME = "taxi-pipeline-data"
MOUNT_PATH = PurePosixPath("/mnt/taxi")  # in pipeline step containers

# In-cluster layout on the volume, as seen from pipeline steps.
DATA_DIR = MOUNT_PATH / "data"  # the CSV directory CsvExampleGen reads (copy the data here)
SERVING_SUBPATH = "serving"  # <volume>/serving/<model name>/<version>/
SERVING_BASE = MOUNT_PATH / SERVING_SUBPATH

# The curated schema as installed in the pipeline image (kubeflow/Dockerfile installs the project
# into /opt/venv with python3.10; the Dockerfile checks this path at build time). Compiled specs
# must name this path, not the compiling machine's checkout.
IMAGE_SCHEMA_PATH = PurePosixPath("/opt/venv/lib/python3.10/site-packages/trainer_module/schema/schema.pbtxt")

# In the TF Serving pod the same directory appears here (TF Serving's conventional /models).
SERVING_MOUNT_PATH = PurePosixPath("/models")


def pvc_platform_spec(executor_labels: Iterable[str], pvc_name: str = PVC_NAME,
                      mount_path: str = str(MOUNT_PATH)) -> Dict:
    """The KFP `PlatformSpec` (second YAML document of a pipeline package) mounting the PVC.

    Same shape as `kfp.kubernetes.mount_pvc` compiles to (kfp-kubernetes 1.x):
    `platforms.kubernetes.deploymentSpec.executors.<label>.pvcMount`. The claim is named with
    `constant`, which every KFP 2.x backend reads (newer ones still accept it alongside
    `pvcNameParameter`).
    TFX's KubeflowV2DagRunner cannot express volumes, so they are added at submit time.
    """
    executors = {label: {"pvcMount": [{"constant": pvc_name, "mountPath": mount_path}]}
                 for label in sorted(executor_labels)}
    return {"platforms": {"kubernetes": {"deploymentSpec": {"executors": executors}}}}
