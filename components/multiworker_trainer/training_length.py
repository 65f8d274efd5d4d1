"""The Trainer's length from its data: rows of the training split -> steps, and a record of what was trained.

A Trainer whose `train_args.num_steps` is unset (0) trains for `custom_config["epochs"]` passes over
its training split (None: `trainer_module.training_length`'s default policy). The executor counts
the rows of the split it was given (raw examples: Transform writes no transformed ones), turns epochs into steps of the
global batch (per-replica batch x workers), and puts that step count into the exec properties
before `run_fn` (in process, or on every worker) rebuilds its FnArgs, so every worker runs the same
number of steps. An explicit `num_steps` (`--train-steps`) is kept as given.

After training, `<model_run>/training.json` records the rows, the steps and global batch `run_fn`
reported, and so the examples trained on; the run's summary shows it.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, List, Optional

from tfx import types
from tfx.dsl.io import fileio
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import io_utils

from trainer_module import records, training_length
from trainer_module.settings import TrainingSettings

log = logging.getLogger(__name__)



def count_rows(examples: List[types.Artifact], splits: List[str]) -> int:
    """Records in the given splits of an Examples artifact (TFRecord files, gzipped or not), counted.

    With TF's record reader (`tf.compat.v1.io.tf_record_iterator`, what TFMA reads its own outputs with): 0.9 s
    for the 667,503 transformed training rows of a 1M-row run, where `tf.data.TFRecordDataset(...).reduce`
    took 15.3 s (one element at a time through a TF function; 21.8 s batched), 2026-12-07, one gzipped file.
    """
    import tensorflow as tf

    total = 0
    for split in splits:
        for uri in artifact_utils.get_split_uris(examples, split):
            files = sorted(fileio.glob(io_utils.all_files_pattern(uri)))
            if not files:
                raise FileNotFoundError(f"the {split} split has no files under {uri}")
            for path in files:
                options = tf.io.TFRecordOptions(compression_type="GZIP" if path.endswith(".gz") else "")
                try:
                    total += sum(1 for _ in tf.compat.v1.io.tf_record_iterator(path, options))
                except tf.errors.DataLossError as err:  # a truncated or corrupt file: say which
                    raise ValueError(f"{path} is not a whole TFRecord file: {err.message}") from err
    return total


def _train_args(exec_properties: Dict[str, Any]) -> Dict[str, Any]:
    return json.loads(exec_properties.get(standard_component_specs.TRAIN_ARGS_KEY) or "{}")


def resolve(input_dict: Dict[str, List[types.Artifact]], exec_properties: Dict[str, Any],
            custom_config: Optional[Dict[str, Any]], workers: int) -> Dict[str, Any]:
    """Sets the train_args' num_steps from the data when it is unset; returns the plan (rows, epochs, steps).

    Modifies `exec_properties` in place (the train_args JSON) so every path that rebuilds FnArgs
    from it sees the same step count.
    """
    train_args = _train_args(exec_properties)
    splits = train_args.get("splits") or [records.TRAIN_SPLIT]
    cfg = custom_config or {}
    epochs = cfg.get("epochs")
    global_batch = int(TrainingSettings.from_custom_config(cfg).batch_size) * workers
    explicit = int(train_args.get("num_steps") or 0)
    examples = input_dict.get(standard_component_specs.EXAMPLES_KEY) or []
    try:
        rows: Optional[int] = count_rows(examples, splits) if examples else None
    except (FileNotFoundError, OSError, ValueError) as err:
        if not explicit:
            raise ValueError(f"cannot derive the training length from the data: {err}; "
                             "give the steps explicitly (--train-steps)") from err
        rows = None  # informative only when the steps are given
    if explicit:
        steps, source = explicit, "train_steps"
    else:
        steps = training_length.steps_for(rows, global_batch, epochs)
        source = "epochs" if epochs is not None else "default epochs"
        train_args["num_steps"] = steps
        exec_properties[standard_component_specs.TRAIN_ARGS_KEY] = json.dumps(train_args)
    plan = {"train_rows": rows, "epochs_requested": epochs, "steps": steps, "steps_from": source,
            "global_batch_size": global_batch}
    log.info("training length: %s", plan)
    return plan


def write_record(model_run_dir: str, plan: Dict[str, Any]) -> Dict[str, Any]:
    """`<model_run>/training.json`: the plan, with the steps and batch the chief's run_fn reported."""
    record = dict(plan)
    report = records.worker_report(model_run_dir, 0)
    if fileio.exists(report):
        with fileio.open(report, "r") as f:
            chief = json.loads(f.read())
        record["steps"] = chief.get("steps", record["steps"])
        record["global_batch_size"] = chief.get("global_batch_size", record["global_batch_size"])
        record["warm_start"] = chief.get("warm_start")  # trainer_module/warm_start.py's record
        record["hyperparameters"] = chief.get("hyperparameters")  # the model's sizes and rate, tuned or not
    record["examples"] = int(record["steps"]) * int(record["global_batch_size"])
    rows = record.get("train_rows")
    record["epochs"] = round(record["examples"] / rows, 3) if rows else None
    with fileio.open(os.path.join(model_run_dir, records.TRAINING_FILE), "w") as f:
        f.write(json.dumps(record, indent=1))
    return record
