"""Custom executor for the standard TFX Trainer that can train on several workers."""
from __future__ import annotations

import components  # noqa: F401  (pins TF_USE_LEGACY_KERAS before TensorFlow loads)
from tfx.components.trainer import executor as trainer_executor


class MultiWorkerExecutor(trainer_executor.GenericExecutor):
    """Pass-through for now: behaves as TFX's GenericExecutor (run_fn in process)."""
