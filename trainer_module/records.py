"""Names of the files, folders and splits that tie components together, with the model's output name:
one home for each.

The Trainer's `run_fn` and executor write the side files; `pipeline.run_view` (the summary, `status`,
`report`), the scoring pipeline and the tests read them by these names. The split names are the ones
the pipeline's ExampleGen writes and every later component reads; the split folder, statistics and
schema file names are TFX's own (tests/test_library_internals.py checks them against TFX).
"""
import glob
import os
from typing import List, Optional, Union

OUTPUT_KEY = "probabilities"  # every serving signature's output: the probability of a big tip, [batch, 1]

# In the Trainer's model_run artifact:
SERVING_GRAPH_FILE = "serving_graph.json"  # what serving_default runs, and why (trainer_module/export.py)
HISTORY_FILE = "history.json"  # the training curves: loss, accuracy, AUC per validation round
TRAINING_FILE = "training.json"  # the training length, warm start, model settings (the executor writes it)
WORKER_REPORTS_DIR = "workers"  # one report per trainer worker process

# The splits ExampleGen writes (pipeline/pipeline.py): the Trainer trains on the first, validates and the
# Evaluator evaluates on the second.
TRAIN_SPLIT = "train"
EVAL_SPLIT = "eval"

SPLIT_PREFIX = "Split-"  # TFX's folder of one split: `<uri>/Split-<split>`
STATISTICS_FILE = "FeatureStats.pb"  # StatisticsGen's statistics of one split, in the split's folder
SCHEMA_FILE = "schema.pbtxt"  # a Schema artifact's one file (ImportSchemaGen copies the curated schema to it)


def split_dir(examples_uri: str, split: str) -> str:
    """Where TFX keeps one split of an Examples or ExampleStatistics artifact: `<uri>/Split-<split>`."""
    return os.path.join(examples_uri, f"{SPLIT_PREFIX}{split}")


def split_of(folder: str) -> Optional[str]:
    """The split a folder of an Examples or ExampleStatistics artifact holds (`Split-eval` -> `eval`), None
    for any other entry."""
    name = os.path.basename(folder.rstrip("/"))
    return name[len(SPLIT_PREFIX):] if name.startswith(SPLIT_PREFIX) else None


def statistics_file(statistics_uri: str, split: str) -> str:
    """StatisticsGen's statistics of one split of an ExampleStatistics artifact."""
    return os.path.join(split_dir(statistics_uri, split), STATISTICS_FILE)


WORKER_REPORT = "worker-{}.json"  # in WORKER_REPORTS_DIR, by task index


def worker_report(model_run_dir: str, task_index: Union[int, str]) -> str:
    """One worker's report (`task_index` "*": the pattern of every one)."""
    return os.path.join(model_run_dir, WORKER_REPORTS_DIR, WORKER_REPORT.format(task_index))


def worker_reports(model_run_dir: str) -> List[str]:
    """Every worker report in a local model_run folder, in task order."""
    found = glob.glob(worker_report(model_run_dir, "*"))
    prefix, suffix = WORKER_REPORT.split("{}")
    return sorted(found, key=lambda p: int(os.path.basename(p)[len(prefix):-len(suffix)]))
