"""Fixtures of the serving tests: TF Serving's test models and sample models built here, the
lead's real taxi model when present."""
from __future__ import annotations

import pytest

import tf_serving_reference


@pytest.fixture(scope="session")
def tf_serving_testdata(tmp_path_factory):
    """A directory laid out as TF Serving's `servables/tensorflow/testdata/`, built once per pytest run:
    `saved_model_half_plus_two_cpu`, `saved_model_half_plus_two_2_versions` (123, 124),
    `saved_model_half_plus_three`, `saved_model_half_plus_two_tf2_cpu`, `saved_model_counter`
    (serving.testing.tf_serving_testdata), and beside them the metadata answers TF Serving's tests
    expect (`half_plus_two_model_metadata.json`, `saved_model_half_plus_two_2_versions_metadata.json`,
    rendered from testdata/tf_serving_models.json)."""
    from serving.testing.tf_serving_testdata import build_tf_serving_testdata

    root = tmp_path_factory.mktemp("tf_serving_testdata")
    build_tf_serving_testdata(root)
    tf_serving_reference.write_metadata_files(root)
    return root


@pytest.fixture(scope="session")
def testdata(tf_serving_testdata):
    """The same directory under the name the serving tests use."""
    return tf_serving_testdata


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
