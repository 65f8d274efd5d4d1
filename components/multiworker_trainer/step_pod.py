"""What the TFJob workers copy from the Trainer step's own pod, read through the Kubernetes API.

The workers must run like the step: the same image, the same service account (object-store access
to the pipeline root), the same image pull secrets (a private registry) and the same volumes at
the same paths (the execution spec names paths on them). Reading these off the running pod,
rather than from compile-time settings, is the robust source: the PVC is chosen at submit time
(`taxi-pipeline submit --pvc NAME`, or by `kfp-kubernetes`' `pvcNameParameter`), pull secrets may
be added by the cluster (a service account's imagePullSecrets, an admission webhook), and the
image may be pinned by digest; the pod spec is what Kubernetes actually ran, whatever put it there.

The step's pod is named by `$KFP_POD_NAME` (KFP's Argo compiler sets it from `metadata.name`),
else `$HOSTNAME` (a pod's hostname is its name unless the spec overrides it). Reading it needs
`get` on `pods` (kubeflow/manifests/trainer-role.yaml).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Dict, Optional, Tuple

MAIN_CONTAINER = "main"  # the name Argo (KFP's workflow engine) gives the step's own container
REQUEST_TIMEOUT_S = 30


@dataclasses.dataclass(frozen=True)
class StepPod:
    name: str
    image: Optional[str]
    service_account: Optional[str]
    image_pull_secrets: Tuple[str, ...]
    pvc_mounts: Dict[str, str]  # claim name -> mount path in the main container


def pod_name() -> Optional[str]:
    return os.environ.get("KFP_POD_NAME") or os.environ.get("HOSTNAME") or None


def read(api, namespace: str) -> Optional[StepPod]:
    """The step's pod as a StepPod, None when this process cannot name its pod; API errors propagate."""
    from kubernetes import client

    name = pod_name()
    if not name:
        return None
    pod = client.CoreV1Api(api).read_namespaced_pod(name, namespace, _request_timeout=REQUEST_TIMEOUT_S)
    return from_pod(pod)


def from_pod(pod) -> StepPod:
    """A `kubernetes.client.V1Pod` reduced to what the workers copy.

    Only volumes backed by a PersistentVolumeClaim and mounted into the main container count: the
    other volumes of a KFP step pod (the launcher's binary, emptyDirs, the service account token)
    belong to KFP or Kubernetes, not to the pipeline's data. One mount per claim (the shape KFP's
    `pvcMount` compiles to); a claim mounted twice keeps its first mount path.
    """
    spec = pod.spec
    containers = spec.containers or []
    main = next((c for c in containers if c.name == MAIN_CONTAINER), containers[0] if containers else None)
    claims = {v.name: v.persistent_volume_claim.claim_name for v in spec.volumes or []
              if v.persistent_volume_claim is not None}
    mounts: Dict[str, str] = {}
    for mount in (main.volume_mounts or []) if main else []:
        if mount.name in claims:
            mounts.setdefault(claims[mount.name], mount.mount_path)
    secrets = tuple(s.name for s in spec.image_pull_secrets or [] if s.name)
    return StepPod(name=pod.metadata.name, image=main.image if main else None,
                   service_account=spec.service_account_name, image_pull_secrets=secrets, pvc_mounts=mounts)
