"""TF-Transform's constants read off its graph by running it on chosen rows (no TFT internals read).

`DensePreprocessing.from_transform` needs the means, deviations and bucket boundaries TF-Transform
computed; TFT keeps them inside its graph, not in files. Running the graph on probe rows recovers them
through TFT's public `transform_features_layer` alone: a z-score is affine in the (log1p) value, so three
points give mean and deviation; a bucket index is monotone in the value, so bisection over float32
keys finds every boundary exactly. If a TFT release changed what those outputs mean, the values read
here would change, and `DensePreprocessing.check_examples` (every output against TFT's own on the raw
eval rows, before any model is exported with them) refuses the dense preprocessing: the model then
serves TFT's own layer, and says so in its record.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np
import tensorflow as tf

from trainer_module.raw_columns import as_parsed, missing_value


def dtype_of(spec):
    return spec.dtype


class TransformProbe:
    """TF-Transform's layer, fed dense columns as serving_raw feeds it (the features not probed: missing)."""

    def __init__(self, tf_transform_output, serving_spec):
        layer = tf_transform_output.transform_features_layer()
        self.spec = serving_spec
        inputs = [tf.TensorSpec([None], spec.dtype, name=name) for name, spec in serving_spec.items()]

        @tf.function(input_signature=inputs, autograph=False)
        def run(*columns):
            return layer({name: as_parsed(column, spec) for (name, spec), column in zip(serving_spec.items(), columns)})

        self._fn = run

    def transform(self, columns: Mapping[str, np.ndarray]):
        feed = [tf.constant(np.asarray(columns[name]), spec.dtype) for name, spec in self.spec.items()]
        return {k: v.numpy() for k, v in self._fn(*feed).items()}

    def _blank(self, rows: int) -> Dict[str, np.ndarray]:
        columns = {}
        for name, spec in self.spec.items():
            if spec.dtype == tf.string:
                columns[name] = np.array([b""] * rows, dtype=object)
            elif isinstance(spec, tf.io.FixedLenFeature):
                columns[name] = np.zeros(rows, spec.dtype.as_numpy_dtype)
            else:
                columns[name] = np.full(rows, missing_value(spec.dtype), spec.dtype.as_numpy_dtype)
        return columns

    def run_rows(self, probes: Sequence[Tuple[str, object]], outputs: Sequence[str]) -> np.ndarray:
        """Row i sets only feature probes[i][0] to probes[i][1]; returns outputs[i] of row i."""
        columns = self._blank(len(probes))
        for i, (name, value) in enumerate(probes):
            columns[name][i] = value
        result = self.transform(columns)
        return np.array([np.asarray(result[out]).reshape(-1)[i] for i, out in enumerate(outputs)])

    def z_score(self, name: str, output: str, log: bool):
        """(mean, deviation) with z = (v - mean) / deviation, v = log1p(x) or x, from three probes."""
        xs = [0, 3, 50]
        z = self.run_rows([(name, x) for x in xs], [output] * len(xs)).astype(np.float64)
        v = np.asarray(xs, np.float32)
        v = (tf.math.log1p(tf.constant(v)).numpy() if log else v).astype(np.float64)
        slope, intercept = np.polyfit(v, z, 1)
        deviation = 1.0 / slope
        return float(-intercept * deviation), float(deviation)

    def boundaries(self, targets: Mapping[str, Tuple[str, str]]) -> Dict[str, List[float]]:
        """key -> every bucket boundary of (input feature, output) (bucket(x) = number of boundaries <= x),
        exactly, by bisection: over float32 values for float inputs, over integers for integer ones."""
        keys = list(targets)
        lows, highs, is_int = {}, {}, {}
        for key in keys:
            name, _ = targets[key]
            is_int[key] = self.spec[name].dtype.is_integer
            lows[key], highs[key] = (-(2 ** 31), 2 ** 31) if is_int[key] else (_key(-_FMAX), _key(_FMAX))
        ends = self.run_rows([(targets[k][0], self._value(lows[k], is_int[k])) for k in keys]
                             + [(targets[k][0], self._value(highs[k], is_int[k])) for k in keys],
                             [targets[k][1] for k in keys] * 2)
        rows = []  # (key, k): find the smallest x with bucket(x) >= k
        for i, key in enumerate(keys):
            bottom, top = int(ends[i]), int(ends[len(keys) + i])
            rows += [(key, k) for k in range(bottom + 1, top + 1)]
        lo = np.array([lows[key] for key, _ in rows], np.int64)
        hi = np.array([highs[key] for key, _ in rows], np.int64)
        ks = np.array([k for _, k in rows], np.int64)
        while rows and np.any(hi - lo > 1):
            mid = (lo + hi) // 2
            got = self.run_rows([(targets[key][0], self._value(m, is_int[key])) for (key, _), m in zip(rows, mid)],
                                [targets[key][1] for key, _ in rows])
            above = got >= ks
            hi, lo = np.where(above, mid, hi), np.where(above, lo, mid)
        found: Dict[str, List[float]] = {}
        for i, key in enumerate(keys):
            found[key] = [-float(_FMAX)] * int(ends[i])  # boundaries at or below the lowest value
        for (key, _), h in zip(rows, hi):
            found[key].append(float(np.float32(self._value(int(h), is_int[key]))))
        return found

    @staticmethod
    def _value(key: int, integer: bool):
        return int(key) if integer else float(_value(np.array([key]))[0])


_FMAX = float(np.finfo(np.float32).max)


def _key(x: float) -> int:
    bits = int(np.array([x], np.float32).view(np.int32)[0])
    return bits if bits >= 0 else -(bits & 0x7FFFFFFF)


def _value(keys: np.ndarray) -> np.ndarray:
    keys = np.asarray(keys, np.int64)
    bits = np.where(keys >= 0, keys, (-keys) | 0x80000000).astype(np.uint32)
    return bits.view(np.float32)
