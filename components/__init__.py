"""Importing any of our packages pins Keras 2 (tf_keras) before TensorFlow can load.

TFX 1.16's Transform layer breaks under Keras 3 ("inputs not connected to outputs"), and Beam
workers and trainer worker processes import this package before TensorFlow, so set it here.

It also keeps `tfx.components`' package `__init__` (every TFX component) from loading until a
name of it is used: see `kubeflow.tfx_internals.defer_tfx_components` (there because Kubeflow steps use it too).
"""
import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"

from kubeflow import tfx_internals  # noqa: E402  (after the Keras pin: nothing here loads TensorFlow)

tfx_internals.defer_tfx_components()
