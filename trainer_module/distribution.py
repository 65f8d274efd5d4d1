"""Which strategy a Trainer worker trains under, and which worker it is.

The same `run_fn` trains in one process or as one of N workers: `TF_CONFIG` names the cluster
(the local launcher and the TFJob both set it), and `MultiWorkerMirroredStrategy` runs when it names
several workers.
"""
import json
import os
from typing import Dict

import tensorflow as tf


def make_strategy() -> tf.distribute.Strategy:
    """MultiWorkerMirroredStrategy when TF_CONFIG names more than one worker, else the default strategy."""
    cluster = json.loads(os.environ.get("TF_CONFIG") or "{}").get("cluster", {})
    if sum(len(cluster.get(role, [])) for role in ("chief", "worker")) > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def task_of(strategy) -> Dict[str, object]:
    """Which worker this process is, and whether it is the one that writes the real outputs."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None) or "worker"
    task_index = int(getattr(resolver, "task_id", None) or 0)
    is_chief = task_type == "chief" or (task_type == "worker" and task_index == 0 and not _has_chief(resolver))
    return {"task_type": task_type, "task_index": task_index, "is_chief": is_chief}


def _has_chief(resolver) -> bool:
    if resolver is None:
        return False
    return bool(resolver.cluster_spec().as_dict().get("chief"))

