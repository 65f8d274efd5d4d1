"""`create_score_pipeline(...)`: the scoring pipeline's wiring, apart from any runner.

CsvExampleGen (one split, `score`, holding every input row: no hash split) -> BulkInferrer, with the
model serving now (ServingBaseline: the newest version under the serving folder, copied into a Model
artifact's `Format-Serving/`, which is where TFX's BulkInferrer reads a model: its executor loads
`path_utils.serving_model_path(model.uri)`, so a Model artifact cannot point at a version folder itself).
The version is picked when the pipeline runs, not when it is built, so a compiled pipeline scores with
whatever is served at the time. The local runner (`pipeline/score.py`) and a Kubeflow compile can both
build it here.
"""
from __future__ import annotations

from typing import Optional, Sequence

# Each component from its own module, not `from tfx.components import ...`: see pipeline/pipeline.py.
from tfx.components.bulk_inferrer.component import BulkInferrer
from tfx.orchestration.pipeline import Pipeline
from tfx.proto import bulk_inferrer_pb2, example_gen_pb2

from components.arrow_csv_example_gen import ArrowCsvExampleGen
from components.serving_baseline import ServingBaseline

SPLIT = "score"  # ExampleGen's one split: every input row, each once
SIGNATURE = "serving_default"  # serialized tf.Examples in, `probabilities` out (trainer_module/run.py)
NODES = ("CsvExampleGen", "ServedModel", "BulkInferrer")


def create_components(input_base: str, serving_model_dir: str) -> list:
    # One input split and an empty output config: ExampleGen writes the input split as it is (TFX makes
    # a 2:1 train/eval hash split only when no output config is given).
    example_gen = ArrowCsvExampleGen(
        input_base=input_base,
        input_config=example_gen_pb2.Input(splits=[example_gen_pb2.Input.Split(name=SPLIT, pattern="*")]),
        output_config=example_gen_pb2.Output(),
    ).with_id("CsvExampleGen")
    served = ServingBaseline(serving_model_dir=serving_model_dir).with_id("ServedModel")
    bulk_inferrer = BulkInferrer(  # no output_example_spec: it writes PredictionLogs (`inference_result`)
        examples=example_gen.outputs["examples"],
        model=served.outputs["baseline_model"],
        data_spec=bulk_inferrer_pb2.DataSpec(example_splits=[SPLIT]),
        model_spec=bulk_inferrer_pb2.ModelSpec(model_signature_name=[SIGNATURE]),
    )
    return [example_gen, served, bulk_inferrer]


def create_score_pipeline(pipeline_name: str, pipeline_root: str, input_base: str, serving_model_dir: str,
                          metadata_connection_config: Optional[object] = None,
                          beam_pipeline_args: Sequence[str] = ()) -> Pipeline:
    """The scoring pipeline. Never cached: ServedModel's cache key sees only the serving folder's path, so
    a cached run would score with the model served when it first ran."""
    return Pipeline(
        pipeline_name=pipeline_name,
        pipeline_root=pipeline_root,
        components=create_components(input_base, serving_model_dir),
        enable_cache=False,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(beam_pipeline_args),
    )
