"""What `run_fn` reads from `fn_args.custom_config`, with the one copy of their defaults.

No TensorFlow import here: `pipeline.configs.PipelineConfig` takes its trainer defaults from this
module, so a run_fn called on its own (the replay bench, a test) and the pipeline train the same way.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

TRAINING_LOOPS = ("fit", "custom")
# The model's size. (256, 128) and 16 rather than the (64, 32) and 8 used before 2026-12-01 (b): the same eval
# accuracy and AUC on the default data (0.8923 / 0.9468 against 0.8911 / 0.9470, one seed), and the
# weights then outweigh the graph TF Lite stores around them, so quantization shrinks the file to
# 0.31x instead of 0.56x (the preprocessing's operators, vocabularies and boundaries weigh ~33 KB in
# every TF Lite file; int8 only shrinks weights). Measured with components.multiworker_trainer.replay
# on one run's inputs: (128, 64)/16 0.38x, (256, 128)/8 0.34x, TFX's taxi example's (100, 70, 50, 25)/8
# 0.44x and accuracy 0.8888.
HIDDEN_UNITS = (256, 128)
EMBEDDING_DIM = 16


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
    # The model's size (trainer_module.model.TaxiModel): MLP widths and the embedding width.
    hidden_units: Tuple[int, ...] = HIDDEN_UNITS
    embedding_dim: int = EMBEDDING_DIM
    tflite: bool = True  # also write <model>/tflite/ (float and quantized TF Lite models, their evaluation)
    # Set by the trainer executor from its raw_examples input: the raw eval split's files (a glob), which
    # calibrate the int8 TF Lite model and evaluate the TF Lite models beside the SavedModel.
    raw_eval_files: Optional[str] = None
    # Set by the trainer executor, which counts them to size the training: the training split's rows. A
    # split trained on more than once and small enough is parsed once and held in memory (run.training_input).
    train_rows: Optional[int] = None

    @classmethod
    def from_custom_config(cls, custom_config) -> "TrainingSettings":
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in (custom_config or {}).items() if k in names}
        if "hidden_units" in values:  # JSON (custom_config) gives a list
            values["hidden_units"] = tuple(int(u) for u in values["hidden_units"])
        settings = cls(**values)
        if settings.training_loop not in TRAINING_LOOPS:
            raise ValueError(f"training loop must be one of {TRAINING_LOOPS}, not {settings.training_loop!r}")
        return settings


# Tuned settings (trainer_module/tuning.py): names in the Tuner's best_hyperparameters, hidden units as "256-128".
TUNED = ("hidden_units", "embedding_dim", "learning_rate")
TUNE_TRIALS = 3  # the Tuner's default budget (`run --tune-trials`)


def encode_hidden_units(units) -> str:
    return "-".join(str(int(u)) for u in units)


def with_hyperparameters(settings: TrainingSettings, config) -> TrainingSettings:
    """`settings` with the values a KerasTuner HyperParameters config (TFX's fn_args.hyperparameters) sets."""
    values = {name: value for name, value in ((config or {}).get("values") or {}).items() if name in TUNED}
    if "hidden_units" in values:
        values["hidden_units"] = tuple(int(u) for u in str(values["hidden_units"]).split("-"))
    if "embedding_dim" in values:
        values["embedding_dim"] = int(values["embedding_dim"])
    if "learning_rate" in values:
        values["learning_rate"] = float(values["learning_rate"])
    return dataclasses.replace(settings, **values)
