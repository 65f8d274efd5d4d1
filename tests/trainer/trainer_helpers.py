"""Helpers of the multi-worker trainer tests: a Trainer execution (artifacts + exec properties)
whose run_fn is the toy one next to this file, and checks that processes are gone.

A uniquely named module rather than conftest.py: test modules import it, and several conftest.py
files in one pytest session would shadow each other under the module name `conftest`.
"""
import json
import os
from pathlib import Path

import components  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

from components.multiworker_trainer.settings import RUN_FN_SETTINGS

TOY_RUN_FN = "trainer_toy_run_fn.run_fn"


def pid_alive(pid: int) -> bool:
    """True if `pid` runs (a zombie counts as gone: it no longer runs anything)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def read_pids(model_run_dir) -> dict:
    pids = {}
    for path in sorted(Path(model_run_dir, "pids").glob("worker-*.pid")):
        pids[path.stem] = int(path.read_text())
    return pids


class TrainerExecution:
    """The dicts a Trainer executor's Do receives, on toy directories under `root`."""

    def __init__(self, root: Path, run_fn: str = TOY_RUN_FN, train_steps: int = 20, eval_steps: int = 2,
                 inputs=None, **custom_config):
        from tfx.types import standard_artifacts

        self.root = Path(root)
        if inputs is None:
            examples = standard_artifacts.Examples()
            examples.uri = str(self.root / "examples")
            examples.split_names = json.dumps(["train", "eval"])
            inputs = {"examples": [examples]}
        self.inputs = inputs
        model = standard_artifacts.Model()
        model.uri = str(self.root / "model")
        model_run = standard_artifacts.ModelRun()
        model_run.uri = str(self.root / "model_run")
        for artifact in (model, model_run):
            os.makedirs(artifact.uri, exist_ok=True)
        self.outputs = {"model": [model], "model_run": [model_run]}
        # The toy run_fn's own settings go where a user's run_fn keeps its own (RUN_FN_SETTINGS: not checked).
        own = {k: custom_config.pop(k) for k in list(custom_config) if k.startswith("toy_")}
        self.custom_config = {"log_dir": str(self.root / "logs"), "worker_timeout_s": 120, **custom_config,
                              RUN_FN_SETTINGS: own}
        self.exec_properties = {
            "train_args": json.dumps({"num_steps": train_steps}),
            "eval_args": json.dumps({"num_steps": eval_steps}),
            "run_fn": run_fn,
            "custom_config": json.dumps(self.custom_config),
        }

    @property
    def serving_model_dir(self) -> Path:
        return self.root / "model" / "Format-Serving"

    @property
    def model_run_dir(self) -> Path:
        return self.root / "model_run"

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    def run(self):
        from components.multiworker_trainer.executor import MultiWorkerExecutor

        MultiWorkerExecutor().Do(self.inputs, self.outputs, self.exec_properties)

    def reports(self):
        return {p.stem: json.loads(p.read_text())
                for p in sorted((self.model_run_dir / "workers").glob("worker-*.json"))}
