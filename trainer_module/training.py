"""The two training loops: Keras `fit`, and a `GradientTape` loop under `strategy.run`."""
from typing import Dict

import tensorflow as tf


def curve_points(steps: int):
    """(points, steps per point): training is cut into a few validated stretches to give curves.

    Whole steps per stretch, so `points * steps per point` (what is trained) can be a few steps under `steps`.
    """
    points = max(1, min(10, steps // 50))
    return points, steps // points


def train_with_fit(model, train_ds, eval_ds, steps: int, eval_steps: int) -> Dict[str, list]:
    epochs, per_epoch = curve_points(steps)  # a few "epochs" give training curves; the total stays ~`steps`
    history = model.fit(
        train_ds,
        steps_per_epoch=per_epoch,
        epochs=epochs,
        validation_data=eval_ds,
        validation_steps=eval_steps,
        verbose=0,
    )
    return {k: [float(v) for v in vals] for k, vals in history.history.items()}


def train_with_custom_loop(strategy, model, train_ds, eval_ds, steps: int, eval_steps: int, global_batch: int):
    """A GradientTape loop under `strategy.run`: the template for users who need a custom loss."""
    with strategy.scope():
        loss_fn = tf.keras.losses.BinaryCrossentropy(reduction=tf.keras.losses.Reduction.NONE)
        metrics = {
            "loss": tf.keras.metrics.Mean(name="loss"),
            "accuracy": tf.keras.metrics.BinaryAccuracy(name="accuracy"),
            "auc": tf.keras.metrics.AUC(name="auc"),
        }
        val_metrics = {"val_" + k: m.__class__(name="val_" + k) for k, m in metrics.items()}
    optimizer = model.optimizer

    def _labels(y):
        return tf.reshape(tf.cast(y, tf.float32), [-1, 1])

    # Plain tracing for the steps (no tensor-dependent branches in them): AutoGraph would convert all
    # of Keras beneath them, which costs far more than the training. The loops below keep AutoGraph.
    @tf.autograph.experimental.do_not_convert
    def train_step(inputs):
        x, y = inputs
        y = _labels(y)
        with tf.GradientTape() as tape:
            p = model(x, training=True)
            loss = tf.nn.compute_average_loss(loss_fn(y, p), global_batch_size=global_batch)
            if model.losses:  # the L2 penalties, as model.fit would add them
                loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        metrics["loss"].update_state(loss * strategy.num_replicas_in_sync)
        metrics["accuracy"].update_state(y, p)
        metrics["auc"].update_state(y, p)

    @tf.autograph.experimental.do_not_convert
    def eval_step(inputs):
        x, y = inputs
        y = _labels(y)
        p = model(x, training=False)
        val_metrics["val_loss"].update_state(tf.reduce_mean(loss_fn(y, p)))
        val_metrics["val_accuracy"].update_state(y, p)
        val_metrics["val_auc"].update_state(y, p)

    @tf.function
    def run_train(iterator, n):
        for _ in tf.range(n):
            strategy.run(train_step, args=(next(iterator),))

    @tf.function
    def run_eval(iterator, n):
        for _ in tf.range(n):
            strategy.run(eval_step, args=(next(iterator),))

    train_it = iter(strategy.experimental_distribute_dataset(train_ds))
    eval_it = iter(strategy.experimental_distribute_dataset(eval_ds))
    epochs, per_epoch = curve_points(steps)
    history: Dict[str, list] = {}
    for _ in range(epochs):
        for m in list(metrics.values()) + list(val_metrics.values()):
            m.reset_state()
        run_train(train_it, tf.constant(per_epoch))
        run_eval(eval_it, tf.constant(eval_steps))
        for name, m in list(metrics.items()) + list(val_metrics.items()):
            history.setdefault(name, []).append(float(m.result()))
    return history



def train(loop: str, strategy, model, train_ds, eval_ds, steps: int, eval_steps: int, global_batch: int):
    """The training curves (`history`) of `steps` steps with the chosen loop ("fit" or "custom")."""
    if loop == "custom":
        return train_with_custom_loop(strategy, model, train_ds, eval_ds, steps, eval_steps, global_batch)
    return train_with_fit(model, train_ds, eval_ds, steps, eval_steps)


def steps_trained(steps: int) -> int:
    """What `train` runs for `steps`: whole stretches, so a few steps fewer at most (`curve_points`)."""
    points, per_point = curve_points(steps)
    return points * per_point
