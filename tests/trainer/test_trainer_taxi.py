"""Acceptance on the real taxi model (trainer_module.run.run_fn on the pipeline's Transform outputs):
2 workers train in sync, save once, and match the single-worker run's eval AUC within 0.01; the
custom GradientTape loop reaches the same bar single- and multi-worker, exported with the same
signatures. Each case replays the reference run's Trainer execution (same inputs, same steps)
through MultiWorkerExecutor, and scores models with the same function on the raw eval split."""
import glob
import re
from pathlib import Path

import pytest

from components.multiworker_trainer import replay

AUC_TOLERANCE = 0.01


def _latest(pattern: str) -> Path:
    paths = sorted(glob.glob(pattern), key=lambda p: int(Path(p).name))
    assert paths, f"nothing matches {pattern}"
    return Path(paths[-1])


@pytest.fixture(scope="module")
def reference(trainer_reference_run):
    root = Path(trainer_reference_run.pipeline_root)
    model_dir = _latest(str(root / "Trainer" / "model" / "*")) / "Format-Serving"
    raw_examples = str(_latest(str(root / "CsvExampleGen" / "examples" / "*")))
    return {"metadata": Path(trainer_reference_run.metadata_path), "raw_examples": raw_examples,
            "model_dir": model_dir, "auc": replay.eval_auc(model_dir, raw_examples),
            "signatures": _signatures(model_dir)}


def _signatures(model_dir: Path) -> dict:
    """Each signature's inputs and outputs (names, dtypes, shapes): what clients and TFMA rely on."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(model_dir))
    return {name: (sorted((k, v.dtype.name, tuple(v.shape)) for k, v in fn.structured_input_signature[1].items()),
                   sorted((k, v.dtype.name, tuple(v.shape)) for k, v in fn.structured_outputs.items()))
            for name, fn in loaded.signatures.items()}


def _assert_single_saved_model(out: Path, result):
    assert (result.serving_model_dir / "saved_model.pb").exists()
    assert glob.glob(str(out / "**" / "saved_model.pb"), recursive=True) == [
        str(result.serving_model_dir / "saved_model.pb")]


def test_two_workers_train_in_sync_save_once_and_match_single_worker_auc(reference, tmp_path, record_property):
    result = replay.replay(reference["metadata"], tmp_path, workers=2, training_loop="fit",
                           log_dir=str(tmp_path / "logs"))
    reports = {r["task_index"]: r for r in result.worker_reports}
    assert sorted(reports) == [0, 1]
    assert all(r["num_replicas_in_sync"] == 2 and r["training_loop"] == "fit" for r in reports.values())
    assert reports[0]["saved_to"] == str(result.serving_model_dir) and reports[1]["saved_to"] is None
    _assert_single_saved_model(tmp_path, result)
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == ["trainer-worker-0.log", "trainer-worker-1.log"]
    # Worker 1 did save (collective ops), into a temporary directory that is gone now.
    worker_1_saves = re.findall(r"Assets written to: (\S+)/assets", (tmp_path / "logs" / "trainer-worker-1.log").read_text())
    assert worker_1_saves and str(tmp_path) not in worker_1_saves[0] and not Path(worker_1_saves[0]).exists()
    auc = replay.eval_auc(result.serving_model_dir, reference["raw_examples"])
    record_property("auc", auc)
    record_property("reference_auc", reference["auc"])
    print(f"eval AUC {auc:.4f} vs single-worker fit {reference['auc']:.4f}")
    assert abs(auc - reference["auc"]) <= AUC_TOLERANCE, (auc, reference["auc"])


@pytest.mark.parametrize("workers", [1, 2])
def test_custom_loop_reaches_the_fit_bar_with_the_same_signatures(reference, tmp_path, workers, record_property):
    result = replay.replay(reference["metadata"], tmp_path, workers=workers, training_loop="custom",
                           log_dir=str(tmp_path / "logs"))
    assert [(r["num_replicas_in_sync"], r["training_loop"]) for r in result.worker_reports] == [(workers, "custom")] * workers
    _assert_single_saved_model(tmp_path, result)
    assert _signatures(result.serving_model_dir) == reference["signatures"]
    auc = replay.eval_auc(result.serving_model_dir, reference["raw_examples"])
    record_property("auc", auc)
    record_property("reference_auc", reference["auc"])
    print(f"eval AUC {auc:.4f} vs single-worker fit {reference['auc']:.4f}")
    assert abs(auc - reference["auc"]) <= AUC_TOLERANCE, (auc, reference["auc"])
