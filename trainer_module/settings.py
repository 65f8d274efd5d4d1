"""What `run_fn` reads from `fn_args.custom_config`, with the one copy of their defaults.

No TensorFlow import here: `pipeline.configs.PipelineConfig` takes its trainer defaults from this
module, so a run_fn called on its own (the replay bench, a test) and the pipeline train the same way.
"""
from __future__ import annotations

import dataclasses

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

    @classmethod
    def from_custom_config(cls, custom_config) -> "TrainingSettings":
        names = {f.name for f in dataclasses.fields(cls)}
        settings = cls(**{k: v for k, v in (custom_config or {}).items() if k in names})
        if settings.training_loop not in TRAINING_LOOPS:
            raise ValueError(f"training loop must be one of {TRAINING_LOOPS}, not {settings.training_loop!r}")
        return settings
