"""Fixtures of the serving tests: exported sample models, the lead's real taxi model when present."""
from __future__ import annotations

import pytest

from serving_helpers import TESTDATA


@pytest.fixture(scope="session")
def testdata():
    if not TESTDATA.is_dir():
        pytest.fail(f"TF Serving's test SavedModels are missing at {TESTDATA} (shared/reference beside the repo)")
    return TESTDATA


@pytest.fixture(scope="session")
def taxi_like_base(tmp_path_factory):
    """<base> with <base>/taxi/1: a taxi-like export (serving_default on tf.Example + serving_raw)."""
    from serving.testing.sample_models import export_taxi_like_model

    base = tmp_path_factory.mktemp("taxi_like")
    export_taxi_like_model(str(base / "taxi" / "1"))
    return base


@pytest.fixture(scope="session")
def classify_regress_base(tmp_path_factory):
    """<base> with <base>/cr/1: a TF1 model with real classify and regress signatures."""
    from serving.testing.sample_models import export_classify_regress_model

    base = tmp_path_factory.mktemp("classify_regress")
    export_classify_regress_model(str(base / "cr" / "1"))
    return base


@pytest.fixture(params=["pipeline_export", "exported_here"])
def taxi_base(request):
    """The pipeline's real exported model (lead's `taxi_serving_base`) and the local export.

    The first lights up once `tests/conftest.py` provides `taxi_serving_base`; until then it skips.
    """
    if request.param == "exported_here":
        return request.getfixturevalue("taxi_like_base")
    try:
        return request.getfixturevalue("taxi_serving_base")
    except pytest.FixtureLookupError:
        pytest.skip("taxi_serving_base (the pipeline's exported model) is not provided yet by tests/conftest.py")
