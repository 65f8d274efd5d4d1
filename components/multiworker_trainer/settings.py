"""The multi-worker part of the Trainer's custom_config, validated, with the one copy of its defaults.

Kept apart from the executor (no TFX import) so `pipeline.configs` can take its defaults from here
without loading TensorFlow.
"""
from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Dict, Optional, Tuple

# Where the Trainer stores the train split's statistics inside the exported SavedModel (servers ignore
# assets.extra): the DriftCheck and `skew` read them back from a served model.
TRAINING_STATISTICS = os.path.join("assets.extra", "training_statistics.pb")

KUBE_API_URL_ENV = "TRAINER_KUBE_API_URL"
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class TrainerConfigError(ValueError):
    """custom_config asks for something the trainer cannot do; the message says what to change."""


@dataclasses.dataclass(frozen=True)
class TrainerSettings:
    """The multi-worker part of the Trainer's custom_config, validated."""

    workers: int = 1
    worker_timeout_s: float = 900.0
    log_dir: Optional[str] = None
    image: Optional[str] = None
    namespace: str = "kubeflow"
    kubernetes_api_url: Optional[str] = None
    tfjob_poll_interval_s: float = 5.0
    # Secrets the TFJob workers pull the image with; None: the Trainer step pod's own (step_pod.py).
    image_pull_secrets: Optional[Tuple[str, ...]] = None

    @classmethod
    def from_custom_config(cls, custom_config: Optional[Dict[str, Any]]) -> "TrainerSettings":
        cfg = custom_config or {}
        check_keys(cfg)
        workers = cfg.get("workers", 1)
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise TrainerConfigError(f"trainer workers must be a whole number of at least 1, not {workers!r}")
        timeout = cfg.get("worker_timeout_s", cls.worker_timeout_s)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise TrainerConfigError(f"worker_timeout_s must be a positive number of seconds, not {timeout!r}")
        return cls(workers=workers, worker_timeout_s=float(timeout), log_dir=cfg.get("log_dir") or None,
                   image=cfg.get("image") or None, namespace=cfg.get("namespace") or cls.namespace,
                   kubernetes_api_url=cfg.get("kubernetes_api_url") or os.environ.get(KUBE_API_URL_ENV) or None,
                   tfjob_poll_interval_s=float(cfg.get("tfjob_poll_interval_s", cls.tfjob_poll_interval_s)),
                   image_pull_secrets=_secret_names(cfg.get("image_pull_secrets")))

    @property
    def uses_tfjob(self) -> bool:
        return self.workers > 1 and bool(self.image or self.kubernetes_api_url or _in_cluster())


# Keys of the Trainer's custom_config besides TrainerSettings' and run_fn's (TrainingSettings): the
# executor's training length (multiworker_trainer/training_length.py) and the Tuner's budget.
OTHER_KEYS = ("epochs", "tune_trials")
# A run_fn of the user's own keeps its own settings under this key, as a dict: not checked here.
RUN_FN_SETTINGS = "run_fn_settings"


def check_keys(custom_config: Dict[str, Any]) -> None:
    """Raises TrainerConfigError naming every key no part of the Trainer reads (a misspelt setting)."""
    from trainer_module.settings import TrainingSettings

    known = ({f.name for f in dataclasses.fields(TrainerSettings)} | {f.name for f in dataclasses.fields(TrainingSettings)}
             | set(OTHER_KEYS) | {RUN_FN_SETTINGS})
    unknown = sorted(set(custom_config) - known)
    if unknown:
        raise TrainerConfigError(f"unknown trainer setting(s) {', '.join(map(repr, unknown))} in custom_config; "
                                 f"the Trainer reads {', '.join(sorted(known))}")


def _secret_names(value) -> Optional[Tuple[str, ...]]:
    """None (unset), or Secret names from a list or a comma-separated string; [] or "" means none."""
    if value is None:
        return None
    names = [n.strip() for n in value.split(",") if n.strip()] if isinstance(value, str) else value
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) and _DNS_SUBDOMAIN.match(n) for n in names):
        raise TrainerConfigError(f"image_pull_secrets must be Kubernetes Secret names (a list, or names separated "
                                 f"by commas), not {value!r}")
    return tuple(names)


def _in_cluster() -> bool:
    from components.multiworker_trainer import tfjob_launcher

    return tfjob_launcher.in_cluster()
