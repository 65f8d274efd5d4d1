"""What `run_fn` reads from `fn_args.custom_config`, with the one copy of their defaults.

No TensorFlow import here: `pipeline.configs.PipelineConfig` takes its trainer defaults from this
module, so a run_fn called on its own (the replay bench, a test) and the pipeline train the same way.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

TRAINING_LOOPS = ("fit", "custom")


@dataclasses.dataclass(frozen=True)
class TrainingSettings:
    """What `run_fn` reads from `fn_args.custom_config`, with the one copy of their defaults.

    `pipeline.configs.PipelineConfig` takes its trainer defaults from here, so a run_fn called on its
    own (the replay bench, a test) and the pipeline train the same way.
    """

    batch_size: int = 256  # per replica: the global batch is this x replicas
    learning_rate: float = 0.003
    seed: int = 42  # weights and shuffling: a re-run on the same data gives (nearly) the same model
    training_loop: str = "fit"  # "fit" (model.fit) or "custom" (GradientTape under strategy.run)
    tflite: bool = True  # also write <model>/tflite/ (float and quantized TF Lite models, their evaluation)
    # Set by the trainer executor from its raw_examples input: the raw eval split's files (a glob), which
    # calibrate the int8 TF Lite model and evaluate the TF Lite models beside the SavedModel.
    raw_eval_files: Optional[str] = None

    @classmethod
    def from_custom_config(cls, custom_config) -> "TrainingSettings":
        names = {f.name for f in dataclasses.fields(cls)}
        settings = cls(**{k: v for k, v in (custom_config or {}).items() if k in names})
        if settings.training_loop not in TRAINING_LOOPS:
            raise ValueError(f"training loop must be one of {TRAINING_LOOPS}, not {settings.training_loop!r}")
        return settings
