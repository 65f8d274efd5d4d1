"""The test models built by serving.testing.tf_serving_testdata are TF Serving's test models.

Each generated model must have exactly the versions, signatures (keys, method names, tensor names,
dtypes, shapes, defaults), variable values and asset of the model of the same name in
tensorflow/serving `tensorflow_serving/servables/tensorflow/testdata/`, as stated in
testdata/tf_serving_models.json; and the server's metadata answer for them must be the one TF
Serving's own tests expect (`http_rest_api_handler_test.cc` `GetModelMetadata`: the
saved_model_half_plus_two_2_versions model at version 123 against
`saved_model_half_plus_two_2_versions_metadata.json`).
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

import tf_serving_reference
from serving.config import model_config
from serving_helpers import http, running_server

SPEC = tf_serving_reference.models_spec()


def test_the_table_names_every_generated_model(tf_serving_testdata):
    built = sorted(p.name for p in tf_serving_testdata.iterdir() if p.is_dir())
    assert built == sorted(SPEC)


@pytest.mark.parametrize("name", sorted(SPEC))
def test_generated_model_matches_tf_serving_testdata(tf_serving_testdata, name):
    spec = SPEC[name]
    base = tf_serving_testdata / name
    assert sorted(os.listdir(base)) == spec["versions"]
    for version in spec["versions"]:
        path = base / version
        assert tf_serving_reference.signatures_of(path) == spec["signatures"], (name, version)
        assert tf_serving_reference.variables_of(path) == spec["variables"], (name, version)
        asset = path / "assets" / "foo.txt"
        assert (asset.read_text() if asset.exists() else None) == spec["asset"], (name, version)


def test_generated_models_compute_what_their_names_say(tf_serving_testdata):
    """y = 0.5x + 2 (half_plus_two, TF1 and TF2), 0.5x + 3 (half_plus_three), in-process."""
    import tensorflow as tf

    x = np.array([[1.0], [2.0], [5.0]], np.float32)
    for name, offset in (("saved_model_half_plus_two_cpu", 2.0), ("saved_model_half_plus_three", 3.0),
                         ("saved_model_half_plus_two_2_versions", 2.0)):
        with tf.Graph().as_default(), tf.compat.v1.Session() as session:
            tf.compat.v1.saved_model.loader.load(session, ["serve"], str(tf_serving_testdata / name / "00000123"))
            np.testing.assert_array_equal(session.run("y:0", {"x:0": x}), 0.5 * x + offset)
    loaded = tf.saved_model.load(str(tf_serving_testdata / "saved_model_half_plus_two_tf2_cpu" / "00000123"))
    out = loaded.signatures["serving_default"](x=tf.constant([4.0]))
    np.testing.assert_array_equal(out["y"].numpy(), [4.0])


@pytest.mark.parametrize("file_name", sorted(tf_serving_reference.METADATA_FILES))
def test_metadata_files_beside_the_models_are_tf_serving_answers(tf_serving_testdata, file_name):
    model_name, version, model_dir = tf_serving_reference.METADATA_FILES[file_name]
    assert json.loads((tf_serving_testdata / file_name).read_text()) == \
        tf_serving_reference.metadata_json(model_name, version, model_dir)


def test_server_metadata_of_2_versions_model_is_tf_serving_answer(tf_serving_testdata):
    """http_rest_api_handler_test.cc GetModelMetadata: version 123 of half_plus_two_2_versions."""
    base = tf_serving_testdata / "saved_model_half_plus_two_2_versions"
    config = model_config.parse_config_text(f"""model_config_list {{ config {{
        name: "saved_model_half_plus_two_2_versions" base_path: "{base}" model_platform: "tensorflow"
        model_version_policy {{ specific {{ versions: 123 }} }} }} }}""")
    with running_server(config, wait_for=["saved_model_half_plus_two_2_versions"]) as server:
        status, body = http(server.rest_port, "/v1/models/saved_model_half_plus_two_2_versions/metadata")
    assert status == 200, body
    assert body == json.loads(
        (tf_serving_testdata / "saved_model_half_plus_two_2_versions_metadata.json").read_text())
