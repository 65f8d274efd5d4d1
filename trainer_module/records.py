"""Names of what the Trainer writes beside the model, with the model's output name: one home for each.

The Trainer's `run_fn` and executor write these; `pipeline.run_view` (the summary, `status`, `report`),
the scoring pipeline and the tests read them by these names.
"""
import os

OUTPUT_KEY = "probabilities"  # every serving signature's output: the probability of a big tip, [batch, 1]

# In the Trainer's model_run artifact:
SERVING_GRAPH_FILE = "serving_graph.json"  # what serving_default runs, and why (trainer_module/export.py)
HISTORY_FILE = "history.json"  # the training curves: loss, accuracy, AUC per validation round
TRAINING_FILE = "training.json"  # the training length, warm start, model settings (the executor writes it)
WORKER_REPORTS_DIR = "workers"  # one report per trainer worker process


def split_dir(examples_uri: str, split: str) -> str:
    """Where TFX keeps one split of an Examples or ExampleStatistics artifact: `<uri>/Split-<split>`."""
    return os.path.join(examples_uri, f"Split-{split}")


def worker_report(model_run_dir: str, task_index: int) -> str:
    return os.path.join(model_run_dir, WORKER_REPORTS_DIR, f"worker-{task_index}.json")
