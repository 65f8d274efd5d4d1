"""The exported model: its four serving signatures, the preprocessing serving_default runs, the save."""
import logging
import os
from typing import Dict, Optional, Tuple

import tensorflow as tf

from trainer_module import features, tflite_export
from trainer_module.dense_preprocessing import DensePreprocessing, PreprocessingMismatch
from trainer_module.raw_columns import as_parsed
from trainer_module.records import OUTPUT_KEY

# serving_default through TF-Transform's own layer (serving_default itself runs the dense preprocessing).
TF_TRANSFORM_SIGNATURE = "serving_tf_transform"
# Raw eval examples the dense preprocessing is checked on before serving_default runs it (all of the
# default data's 4,966; the check takes ~0.1 s per 1,000).
CHECK_ROWS = 10_000


def _serving_signatures(model, tf_transform_output, dense: Optional[DensePreprocessing] = None) -> Dict[str, object]:
    """serving_default (serialized tf.Example), serving_tf_transform (the same through TF-Transform's
    own layer), serving_raw (one tensor per raw feature), transform_features.

    serving_default runs `dense` when given (checked against TF-Transform's layer by
    `serving_preprocessing`), else TF-Transform's layer, as serving_tf_transform always does.
    Traced without AutoGraph: nothing in them branches on tensor values, and converting the Keras
    and TFT code beneath them costs several seconds per export.
    """
    model.tft_layer = tf_transform_output.transform_features_layer()
    raw_spec = tf_transform_output.raw_feature_spec()
    serving_spec = features.serving_feature_spec(raw_spec)
    examples = tf.TensorSpec([None], tf.string, name="examples")

    @tf.function(input_signature=[examples], autograph=False)
    def serve_examples_tf_transform(serialized):
        parsed = tf.io.parse_example(serialized, serving_spec)
        return {OUTPUT_KEY: model(model.tft_layer(parsed))}

    serve_examples = serve_examples_tf_transform
    if dense is not None:
        served = dense.with_static_tables()
        model.dense_vocabulary_tables = served.tables  # saved with the model, filled when it loads

        @tf.function(input_signature=[examples], autograph=False)
        def serve_examples_dense(serialized):
            return {OUTPUT_KEY: model(served.from_examples(serialized))}

        serve_examples = serve_examples_dense

    raw_inputs = [tf.TensorSpec([None], spec.dtype, name=name) for name, spec in sorted(serving_spec.items())]

    @tf.function(input_signature=raw_inputs, autograph=False)
    def serve_raw(*columns):
        parsed = {}
        for (name, spec), column in zip(sorted(serving_spec.items()), columns):
            parsed[name] = as_parsed(column, spec)
        return {OUTPUT_KEY: model(model.tft_layer(parsed))}

    @tf.function(input_signature=[examples], autograph=False)
    def transform_features(serialized):
        return model.tft_layer(tf.io.parse_example(serialized, raw_spec))

    return {
        "serving_default": serve_examples.get_concrete_function(),
        TF_TRANSFORM_SIGNATURE: serve_examples_tf_transform.get_concrete_function(),
        "serving_raw": serve_raw.get_concrete_function(),
        "transform_features": transform_features.get_concrete_function(),
    }


def serving_preprocessing(tf_transform_output, raw_eval_files: Optional[str], limit: int = CHECK_ROWS
                          ) -> Tuple[Optional[DensePreprocessing], Dict[str, object]]:
    """The preprocessing serving_default runs, and the record of why.

    The dense preprocessing (`trainer_module.dense_preprocessing`) when it gives TF-Transform's outputs
    on up to `limit` raw eval tf.Examples, parsed as a client's are; otherwise None (serving_default then
    runs TF-Transform's own layer: slower, and right by construction) with the reason, logged as a
    warning. Without raw eval examples nothing can be checked, so TF-Transform's layer is used.
    """
    if not raw_eval_files:
        return None, {"serving_default": "tf_transform",
                      "why": "no raw eval examples to check the dense preprocessing on"}
    files = sorted(tf.io.gfile.glob(raw_eval_files))
    serialized = [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP").take(limit)] if files else []
    if not serialized:
        return None, {"serving_default": "tf_transform", "why": f"no raw eval examples in {raw_eval_files}"}
    serving_spec = features.serving_feature_spec(tf_transform_output.raw_feature_spec())
    try:
        # Built from trainer_module.features' groups: a preprocessing_fn edited for other data without
        # them may not be probe-able at all, and TF-Transform's layer then serves, as on a mismatch.
        dense = DensePreprocessing.from_transform(tf_transform_output, serving_spec)
    except Exception as err:  # noqa: BLE001 - the fallback is always right; the reason is recorded
        logging.warning("serving_default runs TF-Transform's own layer: the dense preprocessing could not be "
                        "built", exc_info=True)
        return None, {"serving_default": "tf_transform",
                      "why": f"the dense preprocessing could not be built: {type(err).__name__}: {err}"}
    try:
        worst = dense.check_examples(tf_transform_output, serialized)
    except PreprocessingMismatch as err:
        logging.warning("serving_default runs TF-Transform's own layer: %s", err)
        return None, {"serving_default": "tf_transform", "why": str(err), "rows_checked": len(serialized)}
    return dense, {"serving_default": "dense_preprocessing", "rows_checked": len(serialized), "max_abs_diff": worst}


def export(model, tf_transform_output, serving_dir: str, dense: Optional[DensePreprocessing] = None) -> None:
    # save_traces=False: clients use the signatures; tracing every Keras call function only costs time.
    model.save(serving_dir, save_format="tf", signatures=_serving_signatures(model, tf_transform_output, dense),
               save_traces=False)


def tflite_dir(serving_model_dir: str) -> str:
    """`<model>/tflite/` for the Trainer's `<model>/Format-Serving/`."""
    return os.path.join(os.path.dirname(serving_model_dir.rstrip("/")), tflite_export.TFLITE_DIR)

