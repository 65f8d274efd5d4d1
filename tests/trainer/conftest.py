"""Fixtures of the multi-worker trainer tests (helpers live in trainer_helpers.py)."""
import pytest

from trainer_helpers import TrainerExecution


@pytest.fixture
def trainer_execution(tmp_path):
    """Factory: trainer_execution(workers=2, toy_mode="fail", ...) -> TrainerExecution."""
    return lambda **kwargs: TrainerExecution(tmp_path / "run", **kwargs)
