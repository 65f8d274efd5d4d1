"""A tiny `run_fn` that honours trainer_module.run's multi-worker contract on toy data.

It lets the launcher tests run real MultiWorkerMirroredStrategy workers in seconds, and adds the
failure modes those tests need (`custom_config["toy_mode"]`):
  "train" (default) train and save like the real run_fn;
  "fail"  worker `toy_worker` raises ValueError before training;
  "hang"  worker `toy_worker` sleeps forever before training (its peer then blocks in a collective);
Every worker writes its pid to `<model_run>/pids/worker-<i>.pid` first, and, once training is
under way, `<model_run>/training-<i>` (so a test can kill a worker mid-training). `toy_step_sleep_s`
slows each step down to keep training under way long enough. `toy_report_delay_s` makes worker
`toy_worker` wait that long after saving before it writes its report, so it finishes after worker 0.
"""
import json
import os
import shutil
import tempfile
import time

import components  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import tensorflow as tf


def _task():
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    workers = len(config.get("cluster", {}).get("worker", [])) or 1
    return workers, int(config.get("task", {}).get("index", 0))


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def _toy_data(n=2048, seed=0):
    rng = tf.random.Generator.from_seed(seed)
    x = rng.normal([n, 4])
    y = tf.cast(tf.reduce_sum(x * [1.0, -2.0, 0.5, 0.0], axis=1, keepdims=True) > 0, tf.float32)
    return x, y


class _Marker(tf.keras.callbacks.Callback):
    def __init__(self, path, sleep_s):
        super().__init__()
        self.path, self.sleep_s = path, sleep_s

    def on_train_batch_end(self, batch, logs=None):
        if batch == 0:
            _write(self.path, "training")
        if self.sleep_s:
            time.sleep(self.sleep_s)


def run_fn(fn_args):
    cfg = (fn_args.custom_config or {}).get("run_fn_settings") or {}  # a user's run_fn's own settings
    mode = cfg.get("toy_mode", "train")
    workers, index = _task()
    _write(os.path.join(fn_args.model_run_dir, "pids", f"worker-{index}.pid"), str(os.getpid()))
    if index == cfg.get("toy_worker", 1):
        if mode == "fail":
            raise ValueError("toy failure on purpose in worker %d" % index)
        if mode == "hang":
            time.sleep(3600)

    strategy = tf.distribute.MultiWorkerMirroredStrategy() if workers > 1 else tf.distribute.get_strategy()
    global_batch = int(cfg.get("batch_size", 32)) * strategy.num_replicas_in_sync
    x, y = _toy_data()
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(global_batch).with_options(options)
    with strategy.scope():
        model = tf.keras.Sequential([tf.keras.layers.Dense(1, activation="sigmoid", input_shape=(4,))])
        model.compile(optimizer=tf.keras.optimizers.Adam(0.05), loss="binary_crossentropy")
    started = time.time()
    marker = _Marker(os.path.join(fn_args.model_run_dir, f"training-{index}"), float(cfg.get("toy_step_sleep_s", 0)))
    model.fit(dataset, steps_per_epoch=fn_args.train_steps, epochs=1, verbose=0, callbacks=[marker])
    seconds = time.time() - started

    is_chief = index == 0
    save_dir = fn_args.serving_model_dir if is_chief else tempfile.mkdtemp(prefix="toy-worker-model-")
    try:
        model.save(save_dir, save_format="tf")
    finally:
        if not is_chief:
            shutil.rmtree(save_dir, ignore_errors=True)
    if index == cfg.get("toy_worker", 1):
        time.sleep(float(cfg.get("toy_report_delay_s", 0)))
    _write(os.path.join(fn_args.model_run_dir, "workers", f"worker-{index}.json"), json.dumps({
        "task_type": "worker", "task_index": index, "num_replicas_in_sync": strategy.num_replicas_in_sync,
        "steps": fn_args.train_steps, "examples_per_second": fn_args.train_steps * global_batch / seconds,
        "training_loop": "fit", "saved_to": save_dir if is_chief else None}))
