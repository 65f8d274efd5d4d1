"""How long to train: the number of steps follows the training split's size, not a fixed count.

`epochs` given: that many passes over the training rows (rounded up to whole steps).
`epochs` None (the default): as many passes as fit in `EXAMPLE_BUDGET` examples, but never fewer
than one, so every training row is seen at least once:

| training rows | epochs | steps of 256 |
|---|---|---|
| 10,000 (the default taxi sample's train split) | 12.8 | 500 (what the pipeline always ran before) |
| 67,000 (100k rows) | 1.9 | 500 |
| 667,000 (1M rows) | 1 | 2,605 |

The budget is the old fixed length (500 steps x 256 = 128,000 examples): the default data trains
exactly as long, and as well, as it did; bigger data trains one full pass, which the old fixed
count never reached beyond 128k rows.

No TensorFlow import here: the pipeline config and the trainer's executor both read it.
"""
from __future__ import annotations

import math
from typing import Optional

EXAMPLE_BUDGET = 128_000  # examples trained on by default when one pass over the data is fewer


def epochs_for(train_rows: int, epochs: Optional[float] = None) -> float:
    """The passes over `train_rows` to train for: `epochs` if given, else the default policy above."""
    if epochs is not None:
        if epochs <= 0:
            raise ValueError(f"epochs must be positive, not {epochs!r}")
        return float(epochs)
    if train_rows < 1:
        raise ValueError("the training split has no rows")
    return max(1.0, EXAMPLE_BUDGET / train_rows)


def steps_for(train_rows: int, global_batch: int, epochs: Optional[float] = None) -> int:
    """Whole steps of `global_batch` covering `epochs_for(train_rows, epochs)` passes (at least one step)."""
    if train_rows < 1:
        raise ValueError("the training split has no rows")
    return max(1, math.ceil(epochs_for(train_rows, epochs) * train_rows / global_batch))
