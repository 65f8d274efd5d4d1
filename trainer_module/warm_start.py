"""Warm start: the new model begins from the weights of the model serving now, where they mean the same.

TFX hands the Trainer the baseline model as `fn_args.base_model` (its SavedModel folder). Its weights
are read from the SavedModel's checkpoint (`variables/variables`), not by loading the model, so any
model this code exported can be read. What carries over:

- the dense layers, when the model's sizes (hidden units, embedding width) are the base model's;
- the shared embedding table and the wide weights row by row: each categorical feature's rows are
  matched by *token* (a vocabulary computed on other spans puts the same company at another index),
  through the vocabulary files the base model carries in `assets/` (TF-Transform's own files, one
  token per line, by `vocab_filename`) and this Transform's vocabularies; the out-of-vocabulary
  buckets and the bucketized features by index. A token new to this window keeps its fresh row.

Anything else (other sizes, other features) trains from scratch, and the record says why. A warm
start trains `WARM_STEPS_FRACTION` of the steps a cold start would.
"""
import os
from typing import Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf

from trainer_module import features

# A warm-started model trains this share of a cold start's steps (its cosine learning-rate decay
# spans the shorter run). 0.5 kept AUC on the newest quarter within noise of a cold start in the
# 16-quarter replay (`python -m bench spans`).
WARM_STEPS_FRACTION = 0.5
_VARIABLE = "{}/.ATTRIBUTES/VARIABLE_VALUE"


def warm_steps(steps: int, record: Dict[str, object]) -> int:
    """The steps to train: fewer after a warm start."""
    return max(1, int(steps * WARM_STEPS_FRACTION)) if record.get("warm_start") else steps


def build(model) -> None:
    """Creates the model's variables (Keras makes them at the first call) with one all-zero row."""
    from trainer_module.model import numeric_inputs

    batch = {name: tf.zeros([1], tf.float32) for name in numeric_inputs()}
    batch.update({name: tf.zeros([1], tf.int64) for name in model.cardinalities})
    model(batch)


def _base_vocabulary(base_dir: str, name: str) -> Optional[List[bytes]]:
    path = os.path.join(base_dir, "assets", name)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path, "rb") as f:
        return [line.rstrip(b"\n") for line in f]


def row_map(model_cardinalities: Dict[str, int], tf_transform_output, base_dir: str
            ) -> Tuple[List[Tuple[int, int]], int, Optional[str]]:
    """(new row, base row) pairs of the shared tables, the base table's size, or a reason it cannot map.

    `model_cardinalities`: the model's own (TaxiModel.cardinalities), in the order of its table's rows."""
    raw_names = {features.transformed_name(name): name for name in features.CATEGORICAL_FEATURES}
    new_rows, base_rows, pairs = 0, 0, []
    for name, size in model_cardinalities.items():
        raw = raw_names.get(name)
        if raw is not None:
            base_vocab = _base_vocabulary(base_dir, raw)
            if base_vocab is None:
                return [], 0, f"the base model has no vocabulary file for {raw}"
            new_vocab = [t if isinstance(t, bytes) else str(t).encode() for t in
                         tf_transform_output.vocabulary_by_name(raw)]
            base_size = features.categorical_cardinality(len(base_vocab))
            where = {token: i for i, token in enumerate(base_vocab)}
            pairs += [(new_rows + i, base_rows + where[t]) for i, t in enumerate(new_vocab) if t in where]
            oov = size - len(new_vocab)  # out-of-vocabulary buckets follow the vocabulary, in both models
            pairs += [(new_rows + len(new_vocab) + k, base_rows + len(base_vocab) + k) for k in range(oov)]
        else:  # bucket indices mean the same bucket (quantiles of other data move its edges a little)
            base_size = size
            pairs += [(new_rows + i, base_rows + i) for i in range(size)]
        new_rows, base_rows = new_rows + size, base_rows + base_size
    return pairs, base_rows, None


def warm_start(model, tf_transform_output, base_dir: Optional[str]) -> Dict[str, object]:
    """Copies what carries over from `base_dir` into the built `model`; returns the record of what it did."""
    if not base_dir:
        return _cold(None, "no base model given")
    try:
        reader = tf.train.load_checkpoint(os.path.join(base_dir, "variables", "variables"))
    except (tf.errors.OpError, ValueError) as err:
        return _cold(base_dir, f"the base model's weights cannot be read: {err}")
    shapes = reader.get_variable_to_shape_map()
    dense = _dense_variables(model)
    if _VARIABLE.format(f"hidden/{len(model.hidden)}/kernel") in shapes:
        return _cold(base_dir, "the base model has more hidden layers (other model sizes)")
    for path, variable in dense.items():
        if list(shapes.get(_VARIABLE.format(path), [])) != variable.shape.as_list():
            return _cold(base_dir, f"{path} is {shapes.get(_VARIABLE.format(path))} in the base model, "
                                   f"{variable.shape.as_list()} here (other model sizes)")
    pairs, base_rows, why = row_map(model.cardinalities, tf_transform_output, base_dir)
    if why:
        return _cold(base_dir, why)
    for table in ("embedding/embeddings", "wide/embeddings"):
        if shapes.get(_VARIABLE.format(table), [None])[0] != base_rows:
            return _cold(base_dir, f"the base model's {table} has {shapes.get(_VARIABLE.format(table))} "
                                   f"rows, its vocabularies say {base_rows}")
    for path, variable in dense.items():
        variable.assign(reader.get_tensor(_VARIABLE.format(path)))
    new_index, base_index = (np.array(side, dtype=np.int64) for side in zip(*pairs))
    for layer, table in ((model.embedding, "embedding/embeddings"), (model.wide, "wide/embeddings")):
        values = layer.embeddings.numpy()
        values[new_index] = reader.get_tensor(_VARIABLE.format(table))[base_index]
        layer.embeddings.assign(values)
    return {"warm_start": True, "base_model": base_dir, "rows_carried": len(pairs),
            "rows": sum(model.cardinalities.values())}


def _cold(base_dir: Optional[str], why: str) -> Dict[str, object]:
    return {"warm_start": False, "base_model": base_dir, "why": why}


def _dense_variables(model) -> Dict[str, tf.Variable]:
    """The dense layers' variables by checkpoint path (`hidden/0/kernel`, `deep_logit/bias`)."""
    named = {}
    for i, layer in enumerate(model.hidden):
        named.update({f"hidden/{i}/kernel": layer.kernel, f"hidden/{i}/bias": layer.bias})
    named.update({"deep_logit/kernel": model.deep_logit.kernel, "deep_logit/bias": model.deep_logit.bias})
    return named
