"""`create_score_pipeline(...)`: the scoring pipeline's wiring, apart from any runner.

CsvExampleGen (one split, `score`, holding every input row: no hash split) -> BulkInferrer, with the
model serving now (ServingBaseline: the newest version under the serving folder, copied into a Model
artifact's `Format-Serving/`, which is where TFX's BulkInferrer reads a model: its executor loads
`path_utils.serving_model_path(model.uri)`, so a Model artifact cannot point at a version folder itself).
The version is picked when the pipeline runs, not when it is built, so a compiled pipeline scores with
whatever is served at the time. The local runner (`pipeline/score.py`) and a Kubeflow compile can both
build it here.

For Kubeflow (`taxi-pipeline compile --score`, `number_rows=True`) ExampleGen numbers the rows itself
(`components/scoring_csv_example_gen.py`: no copy of the input, which on Kubeflow lies on the shared volume),
`ScoringInputCheck` checks the input first and `ScoreWriter` writes the scored rows after BulkInferrer
(`pipeline/score_steps.py`); locally `score` does those in its own process around the run.
"""
from __future__ import annotations

from typing import Optional, Sequence

# Each component from its own module, not `from tfx.components import ...`: see pipeline/pipeline.py.
from tfx.components.bulk_inferrer.component import BulkInferrer
from tfx.orchestration.pipeline import Pipeline
from tfx.proto import bulk_inferrer_pb2, example_gen_pb2

from components.arrow_csv_example_gen import ArrowCsvExampleGen
from components.scoring_csv_example_gen import ScoringCsvExampleGen
from components.serving_baseline import ServingBaseline

SPLIT = "score"  # ExampleGen's one split: every input row, each once
SIGNATURE = "serving_default"  # serialized tf.Examples in, `probabilities` out (trainer_module/run.py)
NODES = ("CsvExampleGen", "ServedModel", "BulkInferrer")
KUBEFLOW_NODES = ("ScoringInputCheck",) + NODES + ("ScoreWriter",)


def create_components(input_base: str, serving_model_dir: str, number_rows: bool = False,
                      schema_path: Optional[str] = None, output_format: str = "csv") -> list:
    """The local nodes (NODES); with `number_rows`, Kubeflow's (KUBEFLOW_NODES), `schema_path` as the steps see it."""
    # One input split and an empty output config: ExampleGen writes the input split as it is (TFX makes
    # a 2:1 train/eval hash split only when no output config is given).
    example_gen = (ScoringCsvExampleGen if number_rows else ArrowCsvExampleGen)(
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
    if not number_rows:
        return [example_gen, served, bulk_inferrer]
    from pipeline.score_steps import ScoreWriter, ScoringInputCheck

    check = ScoringInputCheck(data=input_base, schema_path=schema_path)
    example_gen.add_upstream_node(check)
    writer = ScoreWriter(inference_result=bulk_inferrer.outputs["inference_result"], data=input_base,
                         schema_path=schema_path, output_format=output_format)
    return [check, example_gen, served, bulk_inferrer, writer]


def create_score_pipeline(pipeline_name: str, pipeline_root: str, input_base: str, serving_model_dir: str,
                          metadata_connection_config: Optional[object] = None,
                          beam_pipeline_args: Sequence[str] = (), **kubeflow) -> Pipeline:
    """The scoring pipeline. Never cached: ServedModel's cache key sees only the serving folder's path, so
    a cached run would score with the model served when it first ran. `kubeflow`: create_components'
    number_rows, schema_path, output_format."""
    return Pipeline(
        pipeline_name=pipeline_name,
        pipeline_root=pipeline_root,
        components=create_components(input_base, serving_model_dir, **kubeflow),
        enable_cache=False,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(beam_pipeline_args),
    )
