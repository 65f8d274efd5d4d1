"""Importing any of our packages pins Keras 2 (tf_keras) before TensorFlow can load.

TFX 1.16's Transform layer breaks under Keras 3 ("inputs not connected to outputs"), and Beam
workers and trainer worker processes import this package before TensorFlow, so set it here.
"""
import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"

import components  # noqa: E402,F401  (defers tfx.components' __init__ before anything here imports TFX)
