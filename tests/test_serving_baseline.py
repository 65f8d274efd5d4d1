"""ServingBaseline (the Kubeflow baseline): the newest served version, copied in TFX's Model layout."""
from tfx.types import standard_artifacts

import components  # noqa: F401  (TF_USE_LEGACY_KERAS)
from components.serving_baseline import ServingBaseline, has_baseline, newest_version

run = ServingBaseline.EXECUTOR_SPEC.executor_class._FUNCTION  # the decorated function, as TFX calls it


def _version(base, number, model=True):
    folder = base / str(number)
    (folder / "assets.extra").mkdir(parents=True)
    (folder / "assets.extra" / "training_statistics.pb").write_bytes(b"stats %d" % number)
    if model:
        (folder / "saved_model.pb").write_bytes(b"model %d" % number)


def test_the_newest_version_with_a_saved_model_is_the_baseline(tmp_path):
    base = tmp_path / "serving" / "taxi"
    for number, model in ((1, True), (2, True), (10, False)):  # 10: a push in progress, no SavedModel yet
        _version(base, number, model)
    (base / ".tmp-11").mkdir()
    assert newest_version(str(base)) == 2
    out = standard_artifacts.Model()
    out.uri = str(tmp_path / "out")
    run(baseline_model=out, serving_model_dir=str(base))
    assert out.get_string_custom_property("serving_version") == "2" and has_baseline(out)
    copied = tmp_path / "out" / "Format-Serving"
    assert (copied / "saved_model.pb").read_bytes() == b"model 2"
    assert (copied / "assets.extra" / "training_statistics.pb").read_bytes() == b"stats 2"


def test_nothing_served_gives_an_empty_baseline_that_counts_as_none(tmp_path):
    out = standard_artifacts.Model()
    out.uri = str(tmp_path / "out")
    run(baseline_model=out, serving_model_dir=str(tmp_path / "nothing"))
    assert out.get_string_custom_property("serving_version") == "" and not has_baseline(out)
    assert not (tmp_path / "out").exists()
    plain = standard_artifacts.Model()  # a resolver's Model (local runs) has no such property
    assert has_baseline(plain) and not has_baseline(None)
