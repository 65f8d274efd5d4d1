"""KFP's cache key (kfp_backend.cache_fingerprint, from cacheutils/cache.go at each release) sees new data
at the same path only through the InputFingerprint task's parameter (kubeflow/input_fingerprint.py)."""
import pytest
from kfp_backend import VERSIONS, cache_fingerprint, resolve_parameters
from kfp_testdata import compiled_job, compiled_spec_path  # noqa: F401

from kubeflow import input_fingerprint, spec_compat, storage


def _example_gen_key(job, version, data_dir=None):
    """CsvExampleGen's cache key, its input_fingerprint parameter computed over `data_dir`."""
    spec = job["pipelineSpec"]
    task = spec["root"]["dag"]["tasks"]["CsvExampleGen"]
    component = spec["components"][task["componentRef"]["name"]]
    config = task["inputs"]["parameters"]["input_config"]["runtimeValue"]["constant"]
    upstream = {spec_compat.FINGERPRINT_TASK: {"fingerprint": input_fingerprint.fingerprint(str(data_dir), config)}} \
        if data_dir else {}
    parameters = resolve_parameters(task["inputs"], component["inputDefinitions"]["parameters"], upstream)
    container = spec["deploymentSpec"]["executors"][component["executorLabel"]]["container"]
    return cache_fingerprint(VERSIONS[version], {}, parameters, component["outputDefinitions"], container["image"],
                             container["command"] + container["args"], pvc_names=[storage.PVC_NAME])


@pytest.mark.parametrize("version", sorted(VERSIONS))
def test_new_data_at_the_same_path_changes_the_key_and_unchanged_data_keeps_it(version, compiled_job, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "data.csv").write_text("fare,tips\n1.0,0\n")
    first = _example_gen_key(compiled_job, version, data)
    assert _example_gen_key(compiled_job, version, data) == first  # a re-run on the same files: a cache hit
    (data / "data.csv").write_text("fare,tips\n1.0,0\n2.0,1\n")
    assert _example_gen_key(compiled_job, version, data) != first  # new rows: CsvExampleGen and all after run
