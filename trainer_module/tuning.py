"""`tuner_fn`: TFX's Tuner searches the model's size and learning rate with KerasTuner.

The search space is `SEARCH_SPACE` (edit it here); the budget is `custom_config["tune_trials"]`
(`run --tune --tune-trials N`). Each trial builds and trains the model exactly as `run_fn` does
(`trainer_module.model`, `training.train_with_fit`) for the Tuner's steps, on the training split through Transform's graph,
and is scored by its AUC on the eval split (`val_auc`, from the last validation round).

KerasTuner's own `run_trial` would call `model.fit` with Keras 3 callbacks on this `tf_keras` model;
`TaxiTuner.run_trial` trains it the project's way instead and returns the objective, KerasTuner's
documented path for custom training. The first trial is the defaults (`trainer_module/settings.py`),
so the best of N trials is never worse on the objective than the untuned model.
"""
import logging

import keras_tuner
import tensorflow as tf
import tensorflow_transform as tft
from tfx.components.tuner.component import TunerFnResult

from trainer_module import settings as training_settings
from trainer_module.model import build_model, cardinalities_from

OBJECTIVE = "val_auc"
# name -> (choices, default); hidden units as "256-128" (a KerasTuner choice is one scalar).
SEARCH_SPACE = {
    "hidden_units": (["256-128", "128-64", "512-256", "256-128-64"],
                     training_settings.encode_hidden_units(training_settings.HIDDEN_UNITS)),
    "embedding_dim": ([8, 16, 32], training_settings.EMBEDDING_DIM),
    "learning_rate": ([0.001, 0.003, 0.01], training_settings.TrainingSettings.learning_rate),
}


def hyperparameters() -> keras_tuner.HyperParameters:
    hp = keras_tuner.HyperParameters()
    for name, (choices, default) in SEARCH_SPACE.items():
        hp.Choice(name, choices, default=default)
    return hp


class _DefaultsFirst(keras_tuner.oracles.RandomSearchOracle):
    """Random search whose first trial is the search space's defaults."""

    def populate_space(self, trial_id):
        if not self.trials:  # KerasTuner lists a trial only once its values are chosen
            return {"status": keras_tuner.engine.trial.TrialStatus.RUNNING, "values": self.hyperparameters.values}
        return super().populate_space(trial_id)


class TaxiTuner(keras_tuner.Tuner):
    """Trains each trial the project's way; its summaries go to the log (KerasTuner prints them)."""

    def run_trial(self, trial, train_ds, eval_ds, steps, eval_steps, cardinalities, seed, **_):
        from trainer_module.training import train_with_fit

        chosen = training_settings.with_hyperparameters(training_settings.TrainingSettings(),
                                                        trial.hyperparameters.get_config())
        tf.keras.utils.set_random_seed(seed)
        model = build_model(cardinalities, chosen.learning_rate, decay_steps=steps,
                            hidden_units=chosen.hidden_units, embedding_dim=chosen.embedding_dim)
        history = train_with_fit(model, train_ds, eval_ds, steps, eval_steps)
        logging.info("tuner trial %s: %s -> %s %.4f", trial.trial_id, trial.hyperparameters.values, OBJECTIVE,
                     history[OBJECTIVE][-1])
        return {OBJECTIVE: history[OBJECTIVE][-1]}

    def search_space_summary(self, extended=False):
        logging.info("tuner search space: %s", {name: choices for name, (choices, _) in SEARCH_SPACE.items()})

    def results_summary(self, num_trials=10):
        best = self.oracle.get_best_trials(1)
        if best:
            logging.info("tuner best of %d trials: %s (%s %.4f)", len(self.oracle.trials), best[0].hyperparameters.values,
                         OBJECTIVE, best[0].score)


def tuner_fn(fn_args) -> TunerFnResult:
    """TFX's Tuner entry point: the tuner and what its `search` is called with."""
    from trainer_module.inputs import input_fn, validation_input

    settings = training_settings.TrainingSettings.from_custom_config(fn_args.custom_config)
    trials = int((fn_args.custom_config or {}).get("tune_trials") or training_settings.TUNE_TRIALS)
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_graph_path)
    batch = int(settings.batch_size)
    train_ds = input_fn(fn_args.train_files, fn_args.data_accessor, tf_transform_output, batch, settings.seed)
    eval_ds = validation_input(fn_args, tf_transform_output, batch)  # the batches run_fn validates on
    oracle = _DefaultsFirst(objective=keras_tuner.Objective(OBJECTIVE, "max"), max_trials=trials,
                            hyperparameters=hyperparameters(), seed=int(settings.seed))
    tuner = TaxiTuner(oracle=oracle, directory=fn_args.working_dir, project_name="taxi", overwrite=True)
    return TunerFnResult(tuner=tuner, fit_kwargs={
        "train_ds": train_ds, "eval_ds": eval_ds,
        "steps": int(fn_args.train_steps), "eval_steps": int(fn_args.eval_steps),
        "cardinalities": cardinalities_from(tf_transform_output), "seed": int(settings.seed), "verbose": 0})
